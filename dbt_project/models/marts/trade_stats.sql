-- Closed-trade statistics per account and symbol, plus symbol '(all)' per account; base
-- currency, household `ALL` in USD. A closing execution is one with non-zero realized P&L:
--   win_rate       wins / (wins + losses)
--   avg_win/loss   mean realized P&L of winning / losing executions (avg_loss <= 0)
--   profit_factor  gross profit / |gross loss| (null without losses)
with rates as (
  select account_id, date, usd_per_base, base_currency from {{ ref('int_account_days') }}
),

executions as (
  select t.account_id, r.base_currency as currency, t.symbol, t.realized_pnl_base as pnl,
         cast(cast(t.realized_pnl_base as double) * r.usd_per_base as decimal(38, 10)) as pnl_usd
  from {{ ref('stg_trades') }} as t
  asof left join rates as r on r.account_id = t.account_id and r.date <= t.date
),

scoped as (
  select account_id, currency, symbol, pnl from executions
  union all
  select account_id, currency, '(all)', pnl from executions
  union all
  select 'ALL', 'USD', symbol, pnl_usd from executions
  union all
  select 'ALL', 'USD', '(all)', pnl_usd from executions
)

select
  account_id,
  any_value(currency) as currency,
  symbol,
  count(*) as executions,
  count(*) filter (where pnl <> 0) as closing_executions,
  count(*) filter (where pnl > 0) as wins,
  count(*) filter (where pnl < 0) as losses,
  cast(count(*) filter (where pnl > 0) as double)
    / nullif(count(*) filter (where pnl <> 0), 0) as win_rate,
  avg(pnl) filter (where pnl > 0) as avg_win,
  avg(pnl) filter (where pnl < 0) as avg_loss,
  coalesce(sum(pnl) filter (where pnl > 0), 0) as gross_profit,
  coalesce(sum(pnl) filter (where pnl < 0), 0) as gross_loss,
  cast(sum(pnl) filter (where pnl > 0) as double)
    / nullif(-cast(sum(pnl) filter (where pnl < 0) as double), 0) as profit_factor,
  coalesce(sum(pnl), 0) as realized_pnl
from scoped
group by account_id, symbol
