-- Corporate action rows: DETAIL rows, and SUMMARY rows only for actions (account, action_id or
-- transaction_id) without DETAIL rows (IBKR repeats each DETAIL row as a SUMMARY row).
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar',
  'transaction_id': 'varchar', 'action_id': 'varchar', 'type': 'varchar',
  'action_description': 'varchar', 'conid': 'varchar', 'symbol': 'varchar',
  'description': 'varchar', 'asset_category': 'varchar', 'currency': 'varchar',
  'isin': 'varchar', 'fx_rate_to_base': 'decimal(38, 10)',
  'action_at': 'timestamp with time zone', 'quantity': 'decimal(38, 10)',
  'amount': 'decimal(38, 10)', 'proceeds': 'decimal(38, 10)', 'value': 'decimal(38, 10)',
  'cost_basis': 'decimal(38, 10)', 'realized_pnl': 'decimal(38, 10)', 'code': 'varchar',
  'statement_sha256': 'varchar'
} %}
with src as (
  select *, coalesce(level_of_detail, 'DETAIL') as lod
  from ({{ read_normalized('corporate_actions', cols) }}) as s
),

detailed as (
  select distinct account_id, coalesce(action_id, transaction_id) as action_key
  from src where lod = 'DETAIL'
)

select s.* exclude (lod), s.lod as row_level
from src as s
where s.lod = 'DETAIL'
   or (s.lod = 'SUMMARY' and not exists (
     select 1 from detailed as d
     where d.account_id = s.account_id
       and d.action_key is not distinct from coalesce(s.action_id, s.transaction_id)))
