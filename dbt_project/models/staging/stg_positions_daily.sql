-- End-of-day positions, SUMMARY rows only (LOT rows split the same holding by tax lot).
-- value_base is the position's NAV contribution in base (0 for futures: variation margin is
-- settled into cash daily).
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'conid': 'varchar', 'level_of_detail': 'varchar',
  'symbol': 'varchar', 'description': 'varchar', 'asset_category': 'varchar',
  'sub_category': 'varchar', 'currency': 'varchar', 'multiplier': 'decimal(38, 10)',
  'strike': 'decimal(38, 10)', 'expiry': 'date', 'put_call': 'varchar',
  'underlying_symbol': 'varchar', 'isin': 'varchar', 'quantity': 'decimal(38, 10)',
  'mark_price': 'decimal(38, 10)', 'position_value': 'decimal(38, 10)',
  'fx_rate_to_base': 'decimal(38, 10)', 'value_base': 'decimal(38, 10)',
  'cost_basis_money': 'decimal(38, 10)', 'unrealized_pnl': 'decimal(38, 10)',
  'source': 'varchar', 'statement_sha256': 'varchar'
} %}
select
  *,
  cast(unrealized_pnl * fx_rate_to_base as decimal(38, 10)) as unrealized_pnl_base,
  cast(cost_basis_money * fx_rate_to_base as decimal(38, 10)) as cost_basis_base
from ({{ read_normalized('positions_daily', cols) }}) as src
where level_of_detail = 'SUMMARY'
