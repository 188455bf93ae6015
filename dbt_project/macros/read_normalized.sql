{#
  Select `columns` (dict name -> DuckDB type, each cast explicitly) from the normalized source
  `table`. Columns absent from every file (older files, optional sections) come out as typed
  nulls. While the table has no Parquet file yet, read_parquet would fail ("No files found"),
  so a typed relation with zero rows is returned instead. The source() call is unconditional so
  dbt records the lineage at parse time.
#}
{% macro read_normalized(table, columns) %}
  {%- set rel = source('normalized', table) -%}
  {%- set present = [] -%}
  {%- if execute -%}
    {%- set pattern = env_var('IBPIPELINE_DATA_DIR', 'data') ~ '/normalized/' ~ table ~ '/date=*/*.parquet' -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')") -%}
    {%- if found.columns[0].values()[0] > 0 -%}
      {%- set described = run_query("describe select * from " ~ rel) -%}
      {%- for name in described.columns[0].values() %}{% do present.append(name) %}{% endfor -%}
    {%- endif -%}
  {%- endif -%}
  select
  {%- for name, type in columns.items() %}
    cast({{ adapter.quote(name) if name in present else 'null' }} as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
  {%- endfor %}
  from {% if present %}{{ rel }}{% else %}(select 1) as no_files where false{% endif %}
{% endmacro %}
