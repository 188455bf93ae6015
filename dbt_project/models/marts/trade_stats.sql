-- Closed-trade statistics per account and symbol, plus symbol '(all)' per account; base
-- currency, household `ALL` in USD. A closing execution is one with non-zero realized P&L:
--   win_rate       wins / (wins + losses)
--   avg_win/loss   mean realized P&L of winning / losing executions (avg_loss <= 0)
--   profit_factor  gross profit / |gross loss| (null without losses)
-- `ALL` converts each execution with its account's usd_per_base of the day (to_usd, exact
-- decimal sums). When an execution has no USD rate, every statistic of that `ALL` row but the
-- execution count is null (never computed from the executions that happen to have a rate);
-- executions_missing_usd_rate counts them (0 on account rows).
with rates as (
  select account_id, date, usd_per_base, base_currency from {{ ref('int_account_days') }}
),

executions as (
  select t.account_id, r.base_currency as currency, t.symbol, t.realized_pnl_base as pnl,
         r.usd_per_base is null as missing_rate,
         {{ to_usd('t.realized_pnl_base', 'r.usd_per_base') }} as pnl_usd
  from {{ ref('stg_trades') }} as t
  asof left join rates as r on r.account_id = t.account_id and r.date <= t.date
),

scoped as (
  select account_id, currency, symbol, pnl, false as missing_rate from executions
  union all
  select account_id, currency, '(all)', pnl, false from executions
  union all
  select 'ALL', 'USD', symbol, pnl_usd, missing_rate from executions
  union all
  select 'ALL', 'USD', '(all)', pnl_usd, missing_rate from executions
),

stats as (
  select
    account_id,
    min(currency) as currency,
    symbol,
    count(*) as executions,
    count(*) filter (where missing_rate) as executions_missing_usd_rate,
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
)

select
  account_id, currency, symbol, executions,
  {% for c in ['closing_executions', 'wins', 'losses', 'win_rate', 'avg_win', 'avg_loss',
               'gross_profit', 'gross_loss', 'profit_factor', 'realized_pnl'] -%}
  case when executions_missing_usd_rate = 0 then {{ c }} end as {{ c }},
  {% endfor -%}
  executions_missing_usd_rate
from stats
