{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'stg_trades'}}}) }}
-- Staging keeps one level of detail per table (EXECUTION trades, SUMMARY positions, DETAIL cash
-- transactions, per-currency cash rows). A level it does not know would be dropped silently,
-- so every level present in the normalized files must be a known one.
with levels as (
  select 'trades' as tbl, level_of_detail
  from ({{ read_normalized('trades', {'level_of_detail': 'varchar'}) }})
  union all
  select 'positions_daily', level_of_detail
  from ({{ read_normalized('positions_daily', {'level_of_detail': 'varchar'}) }})
  union all
  select 'cash_transactions', coalesce(level_of_detail, 'DETAIL')
  from ({{ read_normalized('cash_transactions', {'level_of_detail': 'varchar'}) }})
  union all
  select 'cash_balances', level_of_detail
  from ({{ read_normalized('cash_balances', {'level_of_detail': 'varchar'}) }})
)
select distinct tbl, level_of_detail
from levels
where not (
  (tbl = 'trades' and level_of_detail in ('EXECUTION', 'ORDER', 'CLOSED_LOT', 'SYMBOL_SUMMARY',
                                          'ASSET_SUMMARY', 'WASH_SALE'))
  or (tbl = 'positions_daily' and level_of_detail in ('SUMMARY', 'LOT'))
  or (tbl = 'cash_transactions' and level_of_detail in ('DETAIL', 'SUMMARY'))
  or (tbl = 'cash_balances' and coalesce(level_of_detail, 'Currency') in ('Currency', 'BaseCurrency'))
)
