-- IBKR's FIFOPerformanceSummaryInBase per instrument and statement period (base currency),
-- the 'Total' rows (no conid) dropped. When statements of the same account overlap (a daily and
-- a yearly file), a period inside a longer one of the account is dropped (the longer wins; equal
-- periods: the first statement_sha256), so nothing is counted twice.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'from_date': 'date', 'to_date': 'date',
  'conid': 'varchar', 'symbol': 'varchar', 'description': 'varchar',
  'asset_category': 'varchar', 'realized_st_profit_base': 'decimal(38, 10)',
  'realized_st_loss_base': 'decimal(38, 10)', 'realized_lt_profit_base': 'decimal(38, 10)',
  'realized_lt_loss_base': 'decimal(38, 10)', 'realized_pnl_base': 'decimal(38, 10)',
  'unrealized_pnl_base': 'decimal(38, 10)', 'total_pnl_base': 'decimal(38, 10)',
  'statement_sha256': 'varchar'
} %}
with src as (
  select *, coalesce(from_date, date) as period_from, coalesce(to_date, date) as period_to
  from ({{ read_normalized('fifo_performance', cols) }}) as s
  where conid is not null
),

periods as (
  select distinct account_id, period_from, period_to, statement_sha256 from src
),

kept as (
  select p.* from periods as p
  where not exists (
    select 1 from periods as q
    where q.account_id = p.account_id
      and q.period_from <= p.period_from and q.period_to >= p.period_to
      and (q.period_to - q.period_from > p.period_to - p.period_from
           or (q.period_from = p.period_from and q.period_to = p.period_to
               and q.statement_sha256 < p.statement_sha256)))
)

select s.* from src as s
where exists (
  select 1 from kept as k
  where k.account_id = s.account_id and k.period_from = s.period_from
    and k.period_to = s.period_to and k.statement_sha256 is not distinct from s.statement_sha256)
