{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- NAV, components and cash flows per day (see int_nav_flows); rebuilds min_date <= date < max_date.
select * from {{ ref('int_nav_flows') }}
where {{ in_date_window() }}
