-- SecuritiesInfo rows (one per account, statement date and conid) as parsed.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'conid': 'varchar', 'symbol': 'varchar',
  'description': 'varchar', 'asset_category': 'varchar', 'sub_category': 'varchar',
  'currency': 'varchar', 'multiplier': 'decimal(38, 10)', 'strike': 'decimal(38, 10)',
  'expiry': 'date', 'put_call': 'varchar', 'underlying_symbol': 'varchar',
  'underlying_conid': 'varchar', 'isin': 'varchar', 'cusip': 'varchar', 'figi': 'varchar',
  'listing_exchange': 'varchar', 'issuer': 'varchar', 'maturity': 'varchar',
  'statement_sha256': 'varchar'
} %}
select * from ({{ read_normalized('securities', cols) }}) as src
where conid is not null
