-- The change in NAV of each account's NAV day (vs its previous NAV day) split into parts, base
-- currency. Flows dated on a day without NAV count on the next NAV day (as int_daily_flows).
--   external_flows        Deposits/Withdrawals and cash transfers (stg_cash_transactions flow_kind
--                         external) + positions transferred in/out (stg_transfers value_base)
--   income                every item of int_income_items (dividends, payments in lieu,
--                         withholding tax, interest received and paid)
--   fees_and_commissions  every item of int_fee_items (commissions, transaction and sales taxes,
--                         CFD charges, advisor, market data, borrow and other fees)
--   fx_translation        currency effect on positions held in a currency other than base since
--                         the previous NAV day: position_value(prev) x (rate(day) - rate(prev)),
--                         rate(prev) the position's fxRateToBase, rate(day) int_fx_to_base
--                         (futures excluded: no NAV value). Non-base cash balances are not known
--                         per day, so their translation stays in market_effect.
--   other                 change in dividend and interest accruals (EquitySummary components)
--   market_effect         the rest: change_in_nav minus every part above (price moves, realized
--                         and unrealized P&L, FX on cash, cash activity of types not listed)
with nav as (
  select account_id, date, total_base as nav,
         coalesce(dividend_accruals_base, 0) + coalesce(interest_accruals_base, 0) as accruals,
         lag(date) over w as prev_date,
         lag(total_base) over w as prev_nav,
         lag(coalesce(dividend_accruals_base, 0) + coalesce(interest_accruals_base, 0)) over w as prev_accruals
  from {{ ref('stg_nav_daily') }}
  window w as (partition by account_id order by date)
),

flows as (
  select account_id, date, 'external' as part, amount_base from {{ ref('stg_cash_transactions') }}
  where flow_kind = 'external'
  union all
  select account_id, date, 'external', value_base from {{ ref('stg_transfers') }}
  union all
  select account_id, date, 'income', amount_base from {{ ref('int_income_items') }}
  union all
  select account_id, date, 'fees', amount_base from {{ ref('int_fee_items') }}
),

booked as (
  select n.account_id, n.date, f.part,
         {{ strict_sum('f.amount_base') }} as amount_base
  from flows as f
  asof join (select account_id, date from nav) as n
    on n.account_id = f.account_id and n.date >= f.date
  group by all
),

bases as (
  select account_id, date, base_currency from {{ ref('int_account_days') }}
),

fx as (
  select n.account_id, n.date,
         sum(cast(p.position_value * (r.rate_to_base - p.fx_rate_to_base) as decimal(38, 10))) as fx_translation,
         count(*) filter (where r.rate_to_base is null) as fx_positions_without_rate
  from nav as n
  join {{ ref('stg_positions_daily') }} as p on p.account_id = n.account_id and p.date = n.prev_date
  left join bases as b on b.account_id = n.account_id and b.date = n.date
  left join {{ ref('int_fx_to_base') }} as r
    on r.account_id = n.account_id and r.date = n.date and r.currency = p.currency
  where coalesce(p.asset_category, '') <> 'FUT' and p.currency is distinct from b.base_currency
    and p.position_value is not null and p.fx_rate_to_base is not null
  group by all
),

parts as (
  select
    n.account_id, n.date, n.prev_date, n.prev_nav as nav_start, n.nav as nav_end,
    n.nav - n.prev_nav as change_in_nav,
    case when e.account_id is null then 0 else e.amount_base end as external_flows,
    case when i.account_id is null then 0 else i.amount_base end as income,
    case when f.account_id is null then 0 else f.amount_base end as fees_and_commissions,
    coalesce(x.fx_translation, 0) as fx_translation,
    n.accruals - n.prev_accruals as other,
    coalesce(x.fx_positions_without_rate, 0) as fx_positions_without_rate
  from nav as n
  left join booked as e on e.account_id = n.account_id and e.date = n.date and e.part = 'external'
  left join booked as i on i.account_id = n.account_id and i.date = n.date and i.part = 'income'
  left join booked as f on f.account_id = n.account_id and f.date = n.date and f.part = 'fees'
  left join fx as x on x.account_id = n.account_id and x.date = n.date
  where n.prev_date is not null
)

select
  *,
  change_in_nav - external_flows - income - fees_and_commissions - fx_translation - other
    as market_effect
from parts
