{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- Daily TWR (start-of-day flow convention) and cumulative TWR since the first return, per
-- account (base currency) and household `ALL` (USD). See int_returns for the formulas.
select * from {{ ref('int_returns') }}
-- path-dependent: days after the window change with it (macros/date_window.sql)
where {{ in_date_window(through_history_end=true) }}
