-- End-of-day NAV and its components in the account's base currency (EquitySummaryByReportDateInBase).
{% set money = ['cash_base', 'stock_base', 'options_base', 'bonds_base', 'commodities_base',
  'funds_base', 'notes_base', 'crypto_base', 'dividend_accruals_base', 'interest_accruals_base',
  'total_base', 'total_long_base', 'total_short_base'] %}
{% set cols = {'account_id': 'varchar', 'date': 'date', 'base_currency': 'varchar'} %}
{% for m in money %}{% do cols.update({m: 'decimal(38, 10)'}) %}{% endfor %}
{% do cols.update({'statement_sha256': 'varchar'}) %}
{{ read_normalized('nav_daily', cols) }}
