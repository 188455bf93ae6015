-- Instruments keyed by IBKR's conid over the whole history: a slowly changing dimension (type 2),
-- one row per conid and version of its identifiers. A symbol, ISIN, CUSIP, FIGI, exchange or name
-- change that keeps the conid opens a new version; valid_from is the first report date the new
-- identifiers were seen, valid_to the day before the next version (null: current version).
-- Observations per conid and date, first non-null wins in this order:
--   SecuritiesInfo (stg_securities), then positions (stg_positions_daily), then corporate
--   action legs (stg_corporate_actions: the rows where renames show).
-- A value missing on a day (a source without it) carries the last one seen forward, so a
-- source that lacks a column never opens a version. Accounts do not matter: a conid names the
-- same instrument in every account.
{% set attrs = ['symbol', 'description', 'asset_category', 'currency', 'isin', 'cusip', 'figi',
  'listing_exchange', 'multiplier', 'underlying_conid', 'underlying_symbol', 'expiry', 'strike',
  'put_call', 'issuer'] %}
{% set keys = ['symbol', 'description', 'isin', 'cusip', 'figi', 'listing_exchange', 'issuer'] %}
with observed as (
  select conid, date, 1 as priority, symbol, description, asset_category, currency, isin, cusip,
         figi, listing_exchange, multiplier, underlying_conid, underlying_symbol, expiry, strike,
         put_call, issuer
  from {{ ref('stg_securities') }}
  union all by name
  select conid, date, 2 as priority, symbol, description, asset_category, currency, isin,
         multiplier, underlying_symbol, expiry, strike, put_call
  from {{ ref('stg_positions_daily') }} where conid is not null
  union all by name
  select conid, date, 3 as priority, symbol, description, asset_category, currency, isin
  from {{ ref('stg_corporate_actions') }} where conid is not null
),

daily as (
  select conid, date,
    {% for a in attrs -%}
    arg_min({{ a }}, priority) filter (where {{ a }} is not null and cast({{ a }} as varchar) <> '')
      as {{ a }}{{ "," if not loop.last }}
    {% endfor %}
  from observed
  group by conid, date
),

filled as (
  select conid, date,
    {% for a in attrs -%}
    last_value({{ a }} ignore nulls) over w as {{ a }}{{ "," if not loop.last }}
    {% endfor %}
  from daily
  window w as (partition by conid order by date rows between unbounded preceding and current row)
),

changes as (
  select *,
    case when lag(date) over w is null
      {% for k in keys -%}
      or {{ k }} is distinct from lag({{ k }}) over w
      {% endfor -%}
      then 1 else 0 end as is_new_version
  from filled
  window w as (partition by conid order by date)
),

numbered as (
  select *, sum(is_new_version) over (partition by conid order by date) as version
  from changes
),

versions as (
  select conid, version,
    min(date) as valid_from,
    max(date) as last_seen,
    {% for a in attrs -%}
    arg_min({{ a }}, date) as {{ a }}{{ "," if not loop.last }}
    {% endfor %}
  from numbered
  group by conid, version
)

select
  conid,
  cast(version as integer) as version,
  valid_from,
  cast(lead(valid_from) over (partition by conid order by version) - interval 1 day as date)
    as valid_to,
  lead(valid_from) over (partition by conid order by version) is null as is_current,
  last_seen,
  {% for a in attrs -%}
  {{ a }}{{ "," if not loop.last }}
  {% endfor %}
from versions
