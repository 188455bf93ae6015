-- Every corporate action row (stg_corporate_actions: DETAIL, SUMMARY only without DETAIL), one
-- row per account, action and instrument leg, with its effect:
--   quantity_change      shares/contracts added (+) or removed (-) on this conid
--   cost_basis_change    cost basis moved onto (+) / off (-) the conid as IBKR writes it
--                        (costBasis, row currency); *_base x fxRateToBase
--   proceeds             cash received (+) or paid (-) by the action (row currency)
--   realized_pnl         P&L IBKR realized on the leg (fifoPnlRealized)
--   value                market value of the leg as IBKR writes it
-- action_type: IBKR's reorg code (type) with its meaning in action_type_description.
select
  account_id,
  date,
  action_id,
  transaction_id,
  type as action_type,
  case type
    when 'FS' then 'forward split' when 'RS' then 'reverse split' when 'SO' then 'spin-off'
    when 'TC' then 'merger / acquisition (cash and/or stock)' when 'TO' then 'tender offer'
    when 'IC' then 'ISIN / CUSIP change' when 'HI' then 'choice dividend (issue)'
    when 'SD' then 'stock dividend' when 'DW' then 'delisted / worthless'
    when 'BM' then 'bond maturity' when 'CM' then 'contract merger'
    when 'CA' then 'contract consolidation' when 'CD' then 'cash dividend' when 'CH' then 'cash and stock'
    when 'CC' then 'contract spin-off' when 'CO' then 'contract split' when 'CP' then 'coupon payment'
    when 'DI' then 'dividend rights issue' when 'ED' then 'expire dividend right'
    when 'FA' then 'fee allocation' when 'FI' then 'issue of fractional share' when 'GV' then 'generic voluntary'
    when 'HD' then 'choice dividend (delivery)' when 'OR' then 'subscribe rights'
    when 'PI' then 'share purchase (issue)' when 'PV' then 'partial call / redemption'
    when 'RI' then 'rights issue' when 'SR' then 'subscribe rights' when 'TI' then 'tender issue'
    when 'TM' then 'tender merger'
    else null
  end as action_type_description,
  action_description,
  conid,
  symbol,
  isin,
  asset_category,
  currency,
  quantity as quantity_change,
  cost_basis as cost_basis_change,
  cast(cost_basis * fx_rate_to_base as decimal(38, 10)) as cost_basis_change_base,
  proceeds,
  cast(proceeds * fx_rate_to_base as decimal(38, 10)) as proceeds_base,
  realized_pnl,
  cast(realized_pnl * fx_rate_to_base as decimal(38, 10)) as realized_pnl_base,
  value,
  amount,
  fx_rate_to_base,
  action_at,
  code,
  row_level as level_of_detail
from {{ ref('stg_corporate_actions') }}
