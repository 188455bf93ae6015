-- Every fee and commission charged, one row per item and fee_type, in base currency, signed as
-- cash (a charge < 0, a refund > 0). fee_source says where it is read from.
--   commission            executions' ibCommission (stg_trades.commission_base); when
--                         UnbundledCommissionDetails has the trade (account, trade id), only
--                         the part its components do not explain (broker execution + other)
--   exchange_fees         UCD thirdPartyExecutionCharge share of the trade's commission
--   clearing_fees         UCD brokerClearingCharge + thirdPartyClearingCharge share
--   regulatory_fees       UCD thirdPartyRegulatoryCharge + regFINRATradingActivityFee +
--                         regSection31TransactionFee + regOther share
--                         (UCD shares: commission_base x component / totalCommission, so the
--                         types of a trade add up exactly to its commission)
--   transaction_tax       executions' taxes, plus TransactionTaxes rows whose trade is not an
--                         execution in the data (source STANDALONE; TRADE rows repeat trade taxes)
--   sales_tax             SalesTaxes rows (VAT/GST on fees)
--   cfd_charges           CFDCharges rows (financing of CFD positions)
--   advisor_fees          cash transactions 'Advisor Fees'
--   commission_adjustment cash transactions 'Commission Adjustments'
--   market_data           'Other Fees' whose description names market data (LEVEL I, L1, SNAPSHOT,
--                         MARKET DATA, QUOTE, NP, NON-PRO, SUBSCRIPTION)
--   borrow_fees           'Other Fees' / 'Broker Fees' describing a borrow fee, and
--                         'Broker Interest Paid' for borrowed stock (description BORROW)
--   broker_fees           other 'Broker Fees'
--   other_fees            any other 'Other Fees'
with ucd as (
  select account_id, trade_id,
         sum(amount) as total,
         sum(coalesce(third_party_execution_charge, 0)) as exch,
         sum(coalesce(broker_clearing_charge, 0) + coalesce(third_party_clearing_charge, 0)) as clearing,
         sum(coalesce(third_party_regulatory_charge, 0) + coalesce(finra_trading_activity_fee, 0)
             + coalesce(section31_transaction_fee, 0) + coalesce(regulatory_other, 0)) as reg
  from {{ ref('stg_fees') }}
  where fee_source = 'UnbundledCommissionDetails' and trade_id is not null
  group by all
  having sum(amount) <> 0
),

trades as (
  select t.account_id, t.date, t.conid, t.symbol, t.transaction_id, t.trade_id, t.commission_base,
         cast(t.taxes * t.fx_rate_to_base as decimal(38, 10)) as taxes_base,
         u.total is not null as unbundled,
         cast(t.commission_base * u.exch / u.total as decimal(38, 10)) as exchange_fees,
         cast(t.commission_base * u.clearing / u.total as decimal(38, 10)) as clearing_fees,
         cast(t.commission_base * u.reg / u.total as decimal(38, 10)) as regulatory_fees
  from {{ ref('stg_trades') }} as t
  left join ucd as u on u.account_id = t.account_id and u.trade_id = t.trade_id
),

trade_items as (
  select account_id, date, conid, symbol, transaction_id, 'commission' as fee_type, 'Trades' as fee_source,
         case when unbundled then commission_base - coalesce(exchange_fees, 0)
                - coalesce(clearing_fees, 0) - coalesce(regulatory_fees, 0)
              else commission_base end as amount_base
  from trades where commission_base <> 0 or commission_base is null
  union all
  select account_id, date, conid, symbol, transaction_id, 'exchange_fees', 'UnbundledCommissionDetails', exchange_fees
  from trades where unbundled and exchange_fees <> 0
  union all
  select account_id, date, conid, symbol, transaction_id, 'clearing_fees', 'UnbundledCommissionDetails', clearing_fees
  from trades where unbundled and clearing_fees <> 0
  union all
  select account_id, date, conid, symbol, transaction_id, 'regulatory_fees', 'UnbundledCommissionDetails', regulatory_fees
  from trades where unbundled and regulatory_fees <> 0
  union all
  select account_id, date, conid, symbol, transaction_id, 'transaction_tax', 'Trades', taxes_base
  from trades where taxes_base <> 0
),

fee_rows as (
  select f.account_id, f.date, f.conid, f.symbol, f.transaction_id,
         case f.fee_source when 'SalesTaxes' then 'sales_tax' when 'TransactionTaxes' then 'transaction_tax'
                           when 'CFDCharges' then 'cfd_charges' end as fee_type,
         f.fee_source, f.amount_base
  from {{ ref('stg_fees') }} as f
  where f.fee_source in ('SalesTaxes', 'CFDCharges')
     or (f.fee_source = 'TransactionTaxes' and not exists (
           select 1 from {{ ref('stg_trades') }} as t
           where t.account_id = f.account_id and t.trade_id = f.trade_id))
),

cash_items as (
  select account_id, date, conid, symbol, transaction_id,
         case
           when type = 'Advisor Fees' then 'advisor_fees'
           when type = 'Commission Adjustments' then 'commission_adjustment'
           when upper(description) like '%BORROW%' then 'borrow_fees'
           when type = 'Broker Fees' then 'broker_fees'
           when regexp_matches(upper(coalesce(description, '')),
                '(LEVEL ?(I|1|ONE|II|2)\b|\bL1\b|\bL2\b|SNAPSHOT|MARKET ?DATA|QUOTE|\bNP\b|NON-?PRO|SUBSCRIPTION)')
             then 'market_data'
           else 'other_fees'
         end as fee_type,
         'CashTransactions' as fee_source, amount_base
  from {{ ref('stg_cash_transactions') }}
  where type in ('Other Fees', 'Advisor Fees', 'Commission Adjustments', 'Broker Fees')
     or (type like '%Interest Paid' and upper(description) like '%BORROW%')
)

select * from trade_items
union all select * from fee_rows
union all select * from cash_items
