{#- On the DuckLake a whole table, replaced in one commit: two runs of different windows that
    delete+insert overlapping days of a path-dependent mart could both insert a new day (neither
    deletes rows the other has not committed yet), while two replacements of one table conflict
    and the later one is run again on the newer snapshot (warehouse.dbt_conflicts). -#}
{{ config(materialized=('table' if target.name == 'ducklake' else 'incremental'),
          incremental_strategy='delete+insert', unique_key=['account_id', 'date']) }}
-- Daily TWR (start-of-day flow convention) and cumulative TWR since the first return, per
-- account (base currency) and household `ALL` (USD). See int_returns for the formulas.
select * from {{ ref('int_returns') }}
-- path-dependent: days after the window change with it (macros/date_window.sql)
{% if target.name != 'ducklake' -%}
where {{ in_date_window(through_history_end=true) }}
{%- endif %}
