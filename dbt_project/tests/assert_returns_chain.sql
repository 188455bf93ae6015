-- The marts' own arithmetic: cumulative_twr chains the daily returns,
-- 1 + cumulative_twr_d = (1 + cumulative_twr of the previous day with a return) * (1 + r_d),
-- and a day without a return (null, never 0) carries the previous cumulative value.
with ordered as (
  select
    account_id, date, daily_return, cumulative_twr,
    lag(cumulative_twr) over (partition by account_id order by date) as prev_cumulative
  from {{ ref('daily_returns') }}
)
select *
from ordered
where daily_return is not null
  and abs((1 + cumulative_twr) - (1 + coalesce(prev_cumulative, 0)) * (1 + daily_return)) > 1e-9
