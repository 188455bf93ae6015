-- Daily conversion rates: 1 from_currency = rate to_currency. Rows IBKR writes as -1 (null rate)
-- are dropped.
{% set cols = {'account_id': 'varchar', 'date': 'date', 'from_currency': 'varchar',
  'to_currency': 'varchar', 'rate': 'decimal(38, 10)', 'statement_sha256': 'varchar'} %}
select * from ({{ read_normalized('fx_rates', cols) }}) as src
where rate is not null and rate > 0
