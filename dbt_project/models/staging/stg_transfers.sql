-- Position and cash transfers (ACATS, ATON, FOP, INTERNAL), DETAIL rows only (SUMMARY rows repeat
-- them). value_base: the position's value in base, signed by direction (IN +, OUT -):
-- positionAmountInBase, else positionAmount x fxRateToBase. Cash moved by a transfer is also a
-- Deposits/Withdrawals cash transaction and is not counted here.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar',
  'transaction_id': 'varchar', 'type': 'varchar', 'direction': 'varchar', 'conid': 'varchar',
  'symbol': 'varchar', 'asset_category': 'varchar', 'currency': 'varchar',
  'fx_rate_to_base': 'decimal(38, 10)', 'quantity': 'decimal(38, 10)',
  'position_amount': 'decimal(38, 10)', 'position_amount_base': 'decimal(38, 10)',
  'cash_transfer': 'decimal(38, 10)', 'statement_sha256': 'varchar'
} %}
select
  *,
  cast(case when upper(direction) = 'OUT' then -1 else 1 end
       * abs(coalesce(position_amount_base, position_amount * fx_rate_to_base)) as decimal(38, 10))
    as value_base
from ({{ read_normalized('transfers', cols) }}) as src
where coalesce(level_of_detail, 'DETAIL') = 'DETAIL'
