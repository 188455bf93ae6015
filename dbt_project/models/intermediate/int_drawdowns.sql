-- Underwater curve per account over the full history (days with a return only).
with wealth as (
  select
    account_id, date, currency, daily_return,
    product(1 + daily_return) over w as wealth
  from {{ ref('int_returns') }}
  where daily_return is not null
  window w as (partition by account_id order by date rows between unbounded preceding and current row)
),

peaks as (
  select
    *,
    greatest(1.0, max(wealth) over (
      partition by account_id order by date rows between unbounded preceding and current row
    )) as peak
  from wealth
)

select account_id, date, currency, daily_return, wealth, peak, wealth / peak - 1 as drawdown
from peaks
