-- Interest accruals per statement window (date = to_date): BASE_SUMMARY rows are in base
-- currency (all currencies); Currency rows in their currency.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'currency': 'varchar', 'level_of_detail': 'varchar',
  'from_date': 'date', 'to_date': 'date', 'starting_accrual_balance': 'decimal(38, 10)',
  'interest_accrued': 'decimal(38, 10)', 'accrual_reversal': 'decimal(38, 10)',
  'fx_translation': 'decimal(38, 10)', 'ending_accrual_balance': 'decimal(38, 10)',
  'statement_sha256': 'varchar'
} %}
{{ read_normalized('interest_accruals', cols) }}
