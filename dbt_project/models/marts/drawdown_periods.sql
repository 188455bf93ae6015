-- Every underwater episode per account, deepest first (rank 1 = max drawdown):
-- start = first day below the peak, trough = deepest day, end = last underwater day,
-- recovery = first day back at the peak (null while underwater), days = end - start + 1
-- (quantstats.drawdown_details conventions).
with marked as (
  select
    *,
    sum(case when drawdown = 0 then 1 else 0 end) over (
      partition by account_id order by date rows between unbounded preceding and current row
    ) as episode
  from {{ ref('int_drawdowns') }}
),

episodes as (
  select
    account_id,
    min(currency) as currency,
    episode,
    min(date) as start_date,
    arg_min(date, [drawdown, epoch(date)]) as trough_date,
    max(date) as end_date,
    min(drawdown) as max_drawdown
  from marked
  where drawdown < 0
  group by account_id, episode
)

select
  e.account_id,
  e.currency,
  row_number() over (partition by e.account_id order by e.max_drawdown, e.start_date) as rank,
  e.start_date,
  e.trough_date,
  e.end_date,
  (select min(m.date) from marked as m
   where m.account_id = e.account_id and m.episode = e.episode + 1) as recovery_date,
  e.max_drawdown,
  datediff('day', e.start_date, e.end_date) + 1 as days
from episodes as e
