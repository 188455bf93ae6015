-- IBKR's own NAV reconciliation per statement window; twr_pct is IBKR's TWR in percent.
{% set money = ['starting_value_base', 'mtm_base', 'realized_base', 'change_in_unrealized_base',
  'deposits_withdrawals_base', 'internal_cash_transfers_base', 'asset_transfers_base',
  'dividends_base', 'withholding_tax_base', 'interest_base', 'commissions_base',
  'other_fees_base', 'fx_translation_base', 'other_base', 'ending_value_base', 'twr_pct'] %}
{% set cols = {'account_id': 'varchar', 'date': 'date', 'from_date': 'date', 'to_date': 'date',
  'base_currency': 'varchar'} %}
{% for m in money %}{% do cols.update({m: 'decimal(38, 10)'}) %}{% endfor %}
{% do cols.update({'statement_sha256': 'varchar'}) %}
{{ read_normalized('change_in_nav', cols) }}
