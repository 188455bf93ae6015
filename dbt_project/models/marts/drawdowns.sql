{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['account_id', 'date']) }}
-- Underwater curve since the first return: wealth = prod(1 + daily_return), peak = running max
-- of wealth starting at 1.0 (capital before the first return), drawdown = wealth / peak - 1
-- (<= 0), as quantstats.to_drawdown_series.
select * from {{ ref('int_drawdowns') }}
-- path-dependent: days after the window change with it (macros/date_window.sql)
where {{ in_date_window(through_history_end=true) }}
