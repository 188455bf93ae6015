-- Cash report per currency (local money) at each statement's to_date. The BASE_SUMMARY row
-- (level_of_detail BaseCurrency) repeats the per-currency rows converted to base, so it is
-- dropped here: summing both would double count.
{% set money = ['starting_cash', 'deposits', 'withdrawals', 'dividends', 'broker_interest',
  'withholding_tax', 'commissions', 'other_fees', 'net_trades_sales', 'net_trades_purchases',
  'fx_translation_gain_loss', 'ending_cash', 'ending_settled_cash'] %}
{% set cols = {'account_id': 'varchar', 'date': 'date', 'currency': 'varchar',
  'level_of_detail': 'varchar', 'from_date': 'date', 'to_date': 'date'} %}
{% for m in money %}{% do cols.update({m: 'decimal(38, 10)'}) %}{% endfor %}
{% do cols.update({'statement_sha256': 'varchar'}) %}
select *
from ({{ read_normalized('cash_balances', cols) }}) as src
where currency <> 'BASE_SUMMARY' and coalesce(level_of_detail, 'Currency') <> 'BaseCurrency'
