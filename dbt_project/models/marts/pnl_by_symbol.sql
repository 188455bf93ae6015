-- P&L per account and instrument in base currency (household `ALL` in USD):
--   realized_pnl    sum of executions' realized P&L (fifoPnlRealized x fxRateToBase)
--   commissions     executions' commissions (signed as cash: negative is a cost)
--   income          dividends / payments in lieu / interest booked against the instrument
--   unrealized_pnl  open positions' unrealized P&L on the account's last position date
-- USD conversion for `ALL` uses each account's usd_per_base of the day the amount occurred.
with rates as (
  select account_id, date, usd_per_base from {{ ref('int_account_days') }}
),

realized as (
  select t.account_id, t.conid, any_value(t.symbol) as symbol,
         any_value(t.asset_category) as asset_category,
         sum(t.realized_pnl_base) as realized_pnl, sum(t.commission_base) as commissions,
         sum(cast(t.realized_pnl_base as double) * r.usd_per_base) as realized_pnl_usd,
         sum(cast(t.commission_base as double) * r.usd_per_base) as commissions_usd
  from {{ ref('stg_trades') }} as t
  asof left join rates as r on r.account_id = t.account_id and r.date <= t.date
  group by t.account_id, t.conid
),

income as (
  select c.account_id, c.conid, any_value(c.symbol) as symbol,
         sum(c.amount_base) as income,
         sum(cast(c.amount_base as double) * r.usd_per_base) as income_usd
  from {{ ref('stg_cash_transactions') }} as c
  asof left join rates as r on r.account_id = c.account_id and r.date <= c.date
  where c.flow_kind = 'income' and c.conid is not null
  group by c.account_id, c.conid
),

last_positions as (
  select p.account_id, p.conid, p.symbol, p.asset_category, p.unrealized_pnl_base as unrealized_pnl,
         cast(p.unrealized_pnl_base as double) * r.usd_per_base as unrealized_pnl_usd
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
    coalesce(r.realized_pnl_usd, 0) as realized_pnl_usd,
    coalesce(r.commissions_usd, 0) as commissions_usd,
    coalesce(i.income_usd, 0) as income_usd,
    coalesce(p.unrealized_pnl_usd, 0) as unrealized_pnl_usd
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
  a.realized_pnl + a.unrealized_pnl + a.commissions + a.income as total_pnl
from per_account as a
left join currencies as c using (account_id)
union all
select
  'ALL', 'USD', conid, any_value(symbol), any_value(asset_category),
  cast(sum(realized_pnl_usd) as decimal(38, 10)),
  cast(sum(unrealized_pnl_usd) as decimal(38, 10)),
  cast(sum(commissions_usd) as decimal(38, 10)),
  cast(sum(income_usd) as decimal(38, 10)),
  cast(sum(realized_pnl_usd + unrealized_pnl_usd + commissions_usd + income_usd) as decimal(38, 10))
from per_account
group by conid
