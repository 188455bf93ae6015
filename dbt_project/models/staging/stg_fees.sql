-- Fee rows of UnbundledCommissionDetails, SalesTaxes, TransactionTaxes and CFDCharges
-- (fee_source). Per account, day and fee_source, DETAIL rows when there are any, else SUMMARY.
-- amount_base = amount x fxRateToBase, signed as IBKR writes it (a charge < 0).
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'fee_source': 'varchar',
  'level_of_detail': 'varchar', 'transaction_id': 'varchar', 'trade_id': 'varchar',
  'fee_description': 'varchar', 'conid': 'varchar', 'symbol': 'varchar',
  'asset_category': 'varchar', 'currency': 'varchar', 'fx_rate_to_base': 'decimal(38, 10)',
  'amount': 'decimal(38, 10)', 'broker_execution_charge': 'decimal(38, 10)',
  'broker_clearing_charge': 'decimal(38, 10)', 'third_party_execution_charge': 'decimal(38, 10)',
  'third_party_clearing_charge': 'decimal(38, 10)',
  'third_party_regulatory_charge': 'decimal(38, 10)',
  'finra_trading_activity_fee': 'decimal(38, 10)', 'section31_transaction_fee': 'decimal(38, 10)',
  'regulatory_other': 'decimal(38, 10)', 'other_charge': 'decimal(38, 10)',
  'tax_type': 'varchar', 'tax_source': 'varchar', 'code': 'varchar', 'statement_sha256': 'varchar'
} %}
with src as (
  select *, coalesce(level_of_detail, 'DETAIL') as lod
  from ({{ read_normalized('fees', cols) }}) as s
)

select * exclude (lod), cast(amount * fx_rate_to_base as decimal(38, 10)) as amount_base
from src
qualify lod = 'DETAIL' or count(*) filter (where lod = 'DETAIL')
  over (partition by account_id, date, fee_source) = 0
