{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- Daily TWR (start-of-day flow convention) and cumulative TWR since the first return, per
-- account (base currency) and household `ALL` (USD). See int_returns for the formulas.
select * from {{ ref('int_returns') }}
where {{ in_date_window() }}
