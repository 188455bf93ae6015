-- One row per account and report date: the account's static attributes as of that day.
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'acct_alias': 'varchar', 'name': 'varchar',
  'base_currency': 'varchar', 'account_type': 'varchar', 'customer_type': 'varchar',
  'master_name': 'varchar', 'date_opened': 'date', 'date_funded': 'date', 'date_closed': 'date',
  'statement_sha256': 'varchar'
} %}
{{ read_normalized('account_info', cols) }}
