-- Trades CLOSED_LOT rows: one row per tax lot closed by a closing execution. IBKR writes the
-- closing trade's date (trade_date) and time (executed_at), the lot's quantity (signed as the
-- closing trade: a long lot sold is negative), its cost (cost_basis) and fifoPnlRealized; proceeds
-- is left empty. notes carries IBKR's holding-period code (ST short term, LT long term).
-- lot_open_at (openDateTime) is read when the normalized trades table has it (typed null else).
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar',
  'transaction_id': 'varchar', 'ib_order_id': 'varchar', 'conid': 'varchar', 'symbol': 'varchar',
  'description': 'varchar', 'asset_category': 'varchar', 'currency': 'varchar',
  'fx_rate_to_base': 'decimal(38, 10)', 'trade_date': 'date',
  'executed_at': 'timestamp with time zone', 'lot_open_at': 'timestamp with time zone',
  'quantity': 'decimal(38, 10)', 'trade_price': 'decimal(38, 10)',
  'cost_basis': 'decimal(38, 10)', 'realized_pnl': 'decimal(38, 10)', 'notes': 'varchar',
  'multiplier': 'decimal(38, 10)', 'statement_sha256': 'varchar'
} %}
select
  *,
  coalesce(trade_date, date) as close_date,
  cast(timezone('America/New_York', lot_open_at) as date) as open_date,
  cast(realized_pnl * fx_rate_to_base as decimal(38, 10)) as realized_pnl_base,
  cast(cost_basis * fx_rate_to_base as decimal(38, 10)) as cost_basis_base
from ({{ read_normalized('trades', cols) }}) as src
where level_of_detail = 'CLOSED_LOT'
