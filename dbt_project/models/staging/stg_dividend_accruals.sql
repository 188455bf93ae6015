-- Dividend accruals: accrual_kind 'open' (OpenDividendAccruals: outstanding at the statement's
-- end, date = toDate) and 'change' (ChangeInDividendAccruals: booked (code Po) or reversed (Re)
-- on date). Money in the row's currency; *_base x fxRateToBase. tax and fee have the sign of
-- gross_amount; net_amount = gross - tax - fee.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'accrual_kind': 'varchar',
  'level_of_detail': 'varchar', 'action_id': 'varchar', 'conid': 'varchar', 'symbol': 'varchar',
  'asset_category': 'varchar', 'currency': 'varchar', 'fx_rate_to_base': 'decimal(38, 10)',
  'ex_date': 'date', 'pay_date': 'date', 'quantity': 'decimal(38, 10)',
  'gross_rate': 'decimal(38, 10)', 'gross_amount': 'decimal(38, 10)', 'tax': 'decimal(38, 10)',
  'fee': 'decimal(38, 10)', 'net_amount': 'decimal(38, 10)', 'code': 'varchar',
  'statement_sha256': 'varchar'
} %}
select
  *,
  cast(gross_amount * fx_rate_to_base as decimal(38, 10)) as gross_amount_base,
  cast(tax * fx_rate_to_base as decimal(38, 10)) as tax_base,
  cast(net_amount * fx_rate_to_base as decimal(38, 10)) as net_amount_base
from ({{ read_normalized('dividend_accruals', cols) }}) as src
where coalesce(level_of_detail, 'DETAIL') = 'DETAIL'
