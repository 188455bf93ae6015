{#-
  The daily marts' date window, min_date <= date < max_date: the vars min_date/max_date when given
  on the command line (`dbt build --vars "{min_date: '2024-06-03', max_date: '2024-06-04'}"`),
  else the environment variables IBPIPELINE_DBT_MIN_DATE/IBPIPELINE_DBT_MAX_DATE (what Dagster
  sets: ibpipeline.assets.marts), else everything (1900-01-01 .. 9999-12-31).

  The environment is read only when the SQL is compiled for execution (`execute`), never while
  parsing: dbt's partial parsing throws its saved parse away whenever the command line's vars
  differ from those it was parsed with, so a window passed as vars made every run re-parse all
  44 models (about 5 s); an env_var read while parsing would re-parse every file using it.
-#}
{% macro date_bound(name, default) -%}
  {%- set value = var(name, none) -%}
  {%- if value is none and execute -%}
    {%- set value = env_var('IBPIPELINE_DBT_' ~ name | upper, '') or none -%}
  {%- endif -%}
  {{- value if value is not none else default -}}
{%- endmacro %}

{#-
  Rows of the daily marts rebuilt by this run: min_date <= date < max_date (date_bound).
  through_history_end=true drops the upper bound, for path-dependent marts (cumulative TWR,
  drawdown from the running peak): a day's value depends on every earlier day, so a run over an
  older range (a backfill after later days were built) rebuilds its days and every later one.
-#}
{% macro in_date_window(column='date', through_history_end=false) -%}
  {{ column }} >= cast('{{ date_bound("min_date", "1900-01-01") }}' as date)
  {%- if not through_history_end %} and {{ column }} < cast('{{ date_bound("max_date", "9999-12-31") }}' as date){% endif %}
{%- endmacro %}

{#- Annual risk-free rate de-annualized per period, as quantstats does. -#}
{% macro rf_per_period() -%}
  (pow(1 + cast({{ var('risk_free_rate') }} as double), 1.0 / {{ var('periods_per_year') }}) - 1)
{%- endmacro %}
