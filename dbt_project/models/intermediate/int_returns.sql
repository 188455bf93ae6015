-- Daily time-weighted returns, full history, external flows at the START of the day:
--   daily_return = nav_d / (nav_{d-1} + external_flow_d) - 1
-- which is how IBKR's ChangeInNAV.twr = 100 * (prod(1 + daily_return) - 1) is built. nav_{d-1}
-- is the account's previous NAV row, so IBKR's EquitySummary row of the day before a
-- statement's fromDate gives the first in-period day its return.
-- A NAV day without a previous NAV has a return only if it is funded that day (nav_{d-1} = 0);
-- otherwise (and whenever the start capital is <= 0) daily_return is null, never 0, and every
-- mart leaves it out of TWR, volatility and drawdowns alike.
-- `ALL` (household, USD) = sum(nav_d) / sum(nav_{d-1} + flow_d) - 1 over the accounts that
-- have a return that day; each account's previous NAV is converted at the previous day's rate
-- and its flow at the day's rate, so FX moves count as return in USD. Sums are decimal (exact,
-- order-free); a day on which an account with NAV has no USD rate has a null household return.
with accounts as (
  select
    account_id, date, currency, usd_per_base, nav, external_flow,
    lag(nav) over (partition by account_id order by date) as prev_nav,
    lag({{ to_usd('nav', 'usd_per_base') }}) over (partition by account_id order by date)
      as prev_nav_usd,
    lag(usd_per_base) over (partition by account_id order by date) as prev_usd_per_base
  from {{ ref('int_nav_flows') }}
  where account_id <> 'ALL'
),

account_rows as (
  select
    *,
    case
      when prev_nav is not null then prev_nav + external_flow
      when external_flow > 0 then external_flow
    end as start_capital
  from accounts
),

account_returns as (
  select
    *,
    case when start_capital > 0 then cast(nav as double) / cast(start_capital as double) - 1 end
      as daily_return,
    {{ to_usd('nav', 'usd_per_base') }} as nav_usd,
    case
      when prev_nav is null then {{ to_usd('external_flow', 'usd_per_base') }}
      when prev_usd_per_base is not null
        then prev_nav_usd + {{ to_usd('external_flow', 'usd_per_base') }}
    end as start_capital_usd
  from account_rows
),

household as (
  select
    'ALL' as account_id,
    r.date,
    'USD' as currency,
    h.nav,
    h.external_flow,
    case when bool_and(r.nav_usd is not null and (r.daily_return is null or r.start_capital_usd is not null))
      then sum(r.start_capital_usd) filter (where r.daily_return is not null) end as start_capital,
    case when bool_and(r.nav_usd is not null and (r.daily_return is null or r.start_capital_usd is not null))
      then sum(r.nav_usd) filter (where r.daily_return is not null) end as end_capital
  from account_returns as r
  join {{ ref('int_nav_flows') }} as h on h.account_id = 'ALL' and h.date = r.date
  group by r.date, h.nav, h.external_flow
),

combined as (
  select account_id, date, currency, nav, external_flow, start_capital, daily_return
  from account_returns
  union all
  select account_id, date, currency, nav, external_flow, start_capital,
         case when start_capital > 0 then cast(end_capital as double) / cast(start_capital as double) - 1 end
  from household
)

select
  *,
  product(1 + daily_return) over (
    partition by account_id order by date rows between unbounded preceding and current row
  ) - 1 as cumulative_twr
from combined
