-- P&L per account and instrument in base currency (household `ALL` in USD):
--   realized_pnl    sum of executions' realized P&L (fifoPnlRealized x fxRateToBase)
--   commissions     executions' commissions (signed as cash: negative is a cost), each converted
--                   with the rate of its own currency (stg_trades.commission_base)
--   income          dividends / payments in lieu / interest booked against the instrument
--   unrealized_pnl  open positions' unrealized P&L on the account's last position date
-- USD conversion for `ALL` uses each account's usd_per_base of the day the amount occurred
-- (to_usd, exact decimal sums). An `ALL` amount with any part lacking a USD rate is null, never
-- a partial sum; usd_amounts_missing_rate counts those parts (0 on account rows).
-- Labels (symbol, asset_category) are the alphabetically first per instrument (deterministic).
with rates as (
  select account_id, date, usd_per_base from {{ ref('int_account_days') }}
),

realized as (
  select t.account_id, t.conid, min(t.symbol) as symbol,
         min(t.asset_category) as asset_category,
         sum(t.realized_pnl_base) as realized_pnl, sum(t.commission_base) as commissions,
         {{ strict_sum(to_usd('coalesce(t.realized_pnl_base, 0)', 'r.usd_per_base')) }} as realized_pnl_usd,
         {{ strict_sum(to_usd('coalesce(t.commission_base, 0)', 'r.usd_per_base')) }} as commissions_usd,
         count(*) - count(r.usd_per_base) as missing_rate
  from {{ ref('stg_trades') }} as t
  asof left join rates as r on r.account_id = t.account_id and r.date <= t.date
  group by t.account_id, t.conid
),

income as (
  select c.account_id, c.conid, min(c.symbol) as symbol,
         sum(c.amount_base) as income,
         {{ strict_sum(to_usd('coalesce(c.amount_base, 0)', 'r.usd_per_base')) }} as income_usd,
         count(*) - count(r.usd_per_base) as missing_rate
  from {{ ref('stg_cash_transactions') }} as c
  asof left join rates as r on r.account_id = c.account_id and r.date <= c.date
  where c.flow_kind = 'income' and c.conid is not null
  group by c.account_id, c.conid
),

last_positions as (
  select p.account_id, p.conid, p.symbol, p.asset_category, p.unrealized_pnl_base as unrealized_pnl,
         {{ to_usd('coalesce(p.unrealized_pnl_base, 0)', 'r.usd_per_base') }} as unrealized_pnl_usd,
         case when r.usd_per_base is null then 1 else 0 end as missing_rate
  from {{ ref('stg_positions_daily') }} as p
  join (select account_id, max(date) as date from {{ ref('stg_positions_daily') }} group by all)
    using (account_id, date)
  left join rates as r using (account_id, date)
),

per_account as (
  select
    account_id,
    conid,
    coalesce(r.symbol, p.symbol, i.symbol) as symbol,
    coalesce(r.asset_category, p.asset_category) as asset_category,
    coalesce(r.realized_pnl, 0) as realized_pnl,
    coalesce(r.commissions, 0) as commissions,
    coalesce(i.income, 0) as income,
    coalesce(p.unrealized_pnl, 0) as unrealized_pnl,
    case when r.account_id is null then 0 else r.realized_pnl_usd end as realized_pnl_usd,
    case when r.account_id is null then 0 else r.commissions_usd end as commissions_usd,
    case when i.account_id is null then 0 else i.income_usd end as income_usd,
    case when p.account_id is null then 0 else p.unrealized_pnl_usd end as unrealized_pnl_usd,
    coalesce(r.missing_rate, 0) + coalesce(i.missing_rate, 0) + coalesce(p.missing_rate, 0)
      as missing_rate
  from realized as r
  full join last_positions as p using (account_id, conid)
  full join income as i using (account_id, conid)
),

currencies as (
  select account_id, arg_max(base_currency, date) as currency
  from {{ ref('int_account_days') }} group by account_id
)

select
  a.account_id, c.currency, a.conid, a.symbol, a.asset_category,
  a.realized_pnl, a.unrealized_pnl, a.commissions, a.income,
  a.realized_pnl + a.unrealized_pnl + a.commissions + a.income as total_pnl,
  cast(0 as bigint) as usd_amounts_missing_rate
from per_account as a
left join currencies as c using (account_id)
union all
select
  'ALL', 'USD', conid, min(symbol), min(asset_category),
  {{ strict_sum('realized_pnl_usd') }},
  {{ strict_sum('unrealized_pnl_usd') }},
  {{ strict_sum('commissions_usd') }},
  {{ strict_sum('income_usd') }},
  {{ strict_sum('realized_pnl_usd + unrealized_pnl_usd + commissions_usd + income_usd') }},
  cast(sum(missing_rate) as bigint)
from per_account
group by conid
