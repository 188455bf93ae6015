{#
  Select `columns` (dict name -> DuckDB type, each cast explicitly) from the normalized source
  `table`: the DuckDB table landing.<table> that the daily_marts step loads from the normalized
  Parquet files before dbt runs (ibpipeline.storage.warehouse.load_landing). Columns absent from
  it (older files, optional sections) come out as typed nulls. While the table has no rows yet
  (no landing table), a typed relation with zero rows is returned instead. The source() call is
  unconditional so dbt records the lineage at parse time.
#}
{% macro read_normalized(table, columns) %}
  {%- set rel = source('normalized', table) -%}
  {%- set present = [] -%}
  {%- if execute -%}
    {%- set described = run_query(
      "select column_name from duckdb_columns() where database_name = '" ~ rel.database ~ "' "
      ~ "and schema_name = '" ~ rel.schema ~ "' and table_name = '" ~ rel.identifier ~ "'") -%}
    {%- for name in described.columns[0].values() %}{% do present.append(name) %}{% endfor -%}
  {%- endif -%}
  select
  {%- for name, type in columns.items() %}
    cast({{ adapter.quote(name) if name in present else 'null' }} as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
  {%- endfor %}
  from {% if present %}{{ rel }}{% else %}(select 1) as no_files where false{% endif %}
{% endmacro %}
