-- DETAIL cash transactions only (SUMMARY rows repeat their totals), classified into flow kinds:
--   external  deposits, withdrawals and cash transfers (the TWR's external flows)
--   income    dividends, payments in lieu, interest received
--   cost      withholding tax, fees, interest paid, commission adjustments
--   other     anything else (kept, never counted as a flow)
{% set cols = {
  'account_id': 'varchar', 'date': 'date', 'level_of_detail': 'varchar',
  'transaction_id': 'varchar', 'type': 'varchar', 'currency': 'varchar',
  'fx_rate_to_base': 'decimal(38, 10)', 'amount': 'decimal(38, 10)', 'settle_date': 'date',
  'transaction_at': 'timestamp with time zone', 'conid': 'varchar', 'symbol': 'varchar',
  'description': 'varchar', 'asset_category': 'varchar', 'isin': 'varchar',
  'action_id': 'varchar', 'trade_id': 'varchar', 'code': 'varchar', 'statement_sha256': 'varchar'
} %}
select
  *,
  cast(amount * fx_rate_to_base as decimal(38, 10)) as amount_base,
  case
    when type in ('Deposits/Withdrawals', 'Deposits & Withdrawals', 'Deposits', 'Withdrawals',
                  'Internal Transfers', 'Transfers', 'Cash Transfers') then 'external'
    when type in ('Dividends', 'Payment In Lieu Of Dividends', 'Broker Interest Received',
                  'Bond Interest Received') then 'income'
    when type in ('Withholding Tax', 'Other Fees', 'Advisor Fees', 'Broker Interest Paid',
                  'Bond Interest Paid', 'Commission Adjustments', 'Broker Fees') then 'cost'
    else 'other'
  end as flow_kind
from ({{ read_normalized('cash_transactions', cols) }}) as src
where coalesce(level_of_detail, 'DETAIL') = 'DETAIL'
