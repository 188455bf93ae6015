-- Realized P&L per account, instrument (conid) and calendar year, short vs long term, in base
-- currency (household `ALL` in USD). Three sources, all shown:
--   fifo_*   IBKR's FIFOPerformanceSummaryInBase (realizedSTProfit + realizedSTLoss,
--            realizedLTProfit + realizedLTLoss, totalRealizedPnl) of the statement periods ending
--            in the year (overlapping periods counted once, see stg_fifo_performance)
--   lots_*   the closed lots of realized_pnl_lots closed in the year (lots_short_term and
--            lots_long_term are null when a lot's term is unknown: no open date, no ST/LT code)
--   executions_total  IBKR's fifoPnlRealized of the executions closed in the year
-- realized_short_term / realized_long_term / realized_total take IBKR's FIFO figures where the
-- account has a FIFO summary for the year (source 'FIFOPerformanceSummaryInBase'), else the
-- closed lots (source 'closed_lots'), else the executions (source 'executions'; no term split,
-- so short and long term are null). ALL: each account's amount x its usd_per_base of the
-- year's last known day (null, never partial, when an account lacks the rate:
-- usd_amounts_missing_rate).
with lots as (
  select account_id, conid, cast(year(close_date) as integer) as year, min(symbol) as symbol,
         min(asset_category) as asset_category,
         case when count(term) = count(*) and count(realized_pnl_base) = count(*)
              then coalesce(sum(realized_pnl_base) filter (where term = 'short'), 0) end as lots_short_term,
         case when count(term) = count(*) and count(realized_pnl_base) = count(*)
              then coalesce(sum(realized_pnl_base) filter (where term = 'long'), 0) end as lots_long_term,
         {{ strict_sum('realized_pnl_base') }} as lots_total,
         count(*) as n_lots
  from {{ ref('realized_pnl_lots') }}
  group by all
),

fifo as (
  select account_id, conid, cast(year(period_to) as integer) as year, min(symbol) as symbol,
         min(asset_category) as asset_category,
         sum(coalesce(realized_st_profit_base, 0) + coalesce(realized_st_loss_base, 0)) as fifo_short_term,
         sum(coalesce(realized_lt_profit_base, 0) + coalesce(realized_lt_loss_base, 0)) as fifo_long_term,
         sum(realized_pnl_base) as fifo_total
  from {{ ref('stg_fifo_performance') }}
  group by all
),

fifo_years as (
  select distinct account_id, year from fifo
),

-- IBKR's own realized P&L per execution (fifoPnlRealized): the source when a Flex query has
-- neither FIFOPerformanceSummaryInBase nor closed lots (no short/long-term split then).
execs as (
  select account_id, conid, cast(year(coalesce(trade_date, date)) as integer) as year,
         min(symbol) as symbol, min(asset_category) as asset_category,
         {{ strict_sum('realized_pnl_base') }} as executions_total,
         count(*) as n_executions
  from {{ ref('stg_trades') }}
  where realized_pnl <> 0
  group by all
),

joined as (
  select
    account_id, conid, year,
    coalesce(f.symbol, l.symbol, x.symbol) as symbol,
    coalesce(f.asset_category, l.asset_category, x.asset_category) as asset_category,
    fy.account_id is not null as use_fifo,
    l.account_id is not null as use_lots,
    f.fifo_short_term, f.fifo_long_term, f.fifo_total,
    l.lots_short_term, l.lots_long_term, l.lots_total, coalesce(l.n_lots, 0) as n_lots,
    x.executions_total
  from fifo as f
  full join lots as l using (account_id, conid, year)
  full join execs as x using (account_id, conid, year)
  left join fifo_years as fy using (account_id, year)
),

per_account as (
  select
    j.account_id, c.currency, j.conid, j.year, j.symbol, j.asset_category,
    case when use_fifo then coalesce(fifo_short_term, 0) when use_lots then lots_short_term end
      as realized_short_term,
    case when use_fifo then coalesce(fifo_long_term, 0) when use_lots then lots_long_term end
      as realized_long_term,
    case when use_fifo then coalesce(fifo_total, 0) when use_lots then lots_total
         else executions_total end as realized_total,
    case when use_fifo then 'FIFOPerformanceSummaryInBase' when use_lots then 'closed_lots'
         else 'executions' end as source,
    fifo_short_term, fifo_long_term, fifo_total, lots_short_term, lots_long_term, lots_total, n_lots,
    executions_total
  from joined as j
  left join (select account_id, arg_max(base_currency, date) as currency
             from {{ ref('int_account_days') }} group by account_id) as c using (account_id)
),

year_rates as (
  select account_id, year(date) as year, arg_max(usd_per_base, date) as usd_per_base
  from {{ ref('int_account_days') }} where usd_per_base is not null group by all
),

priced as (
  select p.*, r.usd_per_base from per_account as p left join year_rates as r using (account_id, year)
)

select *, cast(0 as bigint) as usd_amounts_missing_rate from per_account
union all by name
select
  'ALL' as account_id, 'USD' as currency, conid, year, min(symbol) as symbol,
  min(asset_category) as asset_category,
  {{ strict_sum(to_usd('realized_short_term', 'usd_per_base')) }} as realized_short_term,
  {{ strict_sum(to_usd('realized_long_term', 'usd_per_base')) }} as realized_long_term,
  {{ strict_sum(to_usd('realized_total', 'usd_per_base')) }} as realized_total,
  case when count(distinct source) = 1 then min(source) else 'mixed' end as source,
  cast(sum(n_lots) as bigint) as n_lots,
  cast(count(*) - count(usd_per_base) as bigint) as usd_amounts_missing_rate
from priced
group by conid, year
