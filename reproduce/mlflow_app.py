"""The suite's MLflow UI: MLflow's own server, unchanged except for the first view of a browser
that has not chosen one.

MLflow 3.17's UI opens an experiment on its GenAI overview (traces, token charts; no runs) and a
run as an "Evaluation run" until the browser's sidebar switch says "Model training", and it
offers no server setting for that default. `mlflow server --app-name NAME` serves the app that the
`mlflow.app` entry point NAME names (`mlflow.server._find_app`); pyproject.toml registers this
module's `create_app` as `reproduce`, and `make mlflow-ui` (`reproduce.serve`) starts
`mlflow server --app-name reproduce`. The app is MLflow's Flask app with one script added to its
index page, which, in the browser's own storage and only where nothing is stored yet:

- sets the GenAI / Model training switch (`mlflow.workflowType_v1`) to model training, so an
  experiment opens on its runs table and a run as a training run, from any link;
- gives each of the suite's experiments its curated runs view (`reproduce.runs_view`, read from
  the experiment's tag), so the runs table opened from the home page shows variant, seed,
  val/acc, costs and channel ratios.

Whatever the user then chooses in the UI is kept: nothing is overwritten.
"""

from __future__ import annotations

import json
import logging

from .runs_view import VIEW_TAG

APP_NAME = "reproduce"                              # mlflow server --app-name reproduce
ENTRY_POINT = "reproduce.mlflow_app:create_app"     # [project.entry-points."mlflow.app"]
SCRIPT_ID = "reproduce-ui-defaults"                 # how the launcher recognises this app

# the UI's own storage keys (MLflow 3.17: useLocalStorage and LocalStorageUtils)
WORKFLOW_KEY, WORKFLOW = "mlflow.workflowType_v1", "machine_learning"
VIEW_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"

_logger = logging.getLogger(__name__)

DEFAULTS_JS = """(function (views) {
  try {
    var store = window.localStorage;
    if (store.getItem(%(workflow_key)s) === null)
      store.setItem(%(workflow_key)s, JSON.stringify(%(workflow)s));
    for (var id in views) {
      var key = %(view_key)s.replace("{ids}", JSON.stringify([id]));
      if (store.getItem(key) === null) store.setItem(key, JSON.stringify(views[id]));
    }
  } catch (e) { /* no storage (private window): MLflow's own defaults */ }
})(%(views)s);"""


def experiment_views(store) -> dict[str, dict]:
    """The curated view of every active experiment that has one, by experiment id."""
    from mlflow.entities import ViewType

    views, token = {}, None
    while True:
        page = store.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                        filter_string=None, order_by=None, page_token=token)
        for exp in page:
            try:
                view = json.loads(exp.tags.get(VIEW_TAG) or "null")
            except ValueError:
                view = None
            if isinstance(view, dict):
                views[exp.experiment_id] = view
        token = page.token
        if not token:
            return views


def defaults_script(views: dict[str, dict]) -> str:
    """The <script> element the index page gets."""
    def js(value) -> str:         # JSON inside a script element: "</" must not end the element
        return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")
    code = DEFAULTS_JS % {"workflow_key": js(WORKFLOW_KEY), "workflow": js(WORKFLOW),
                          "view_key": js(VIEW_KEY), "views": js(views)}
    return f'<script id="{SCRIPT_ID}">{code}</script>'


def _is_index() -> bool:
    from flask import request
    return request.endpoint == "serve"      # mlflow.server: the route that sends index.html


def _full_index():
    """The index is sent from its file and may be answered "not modified" from a copy the
    browser kept from plain MLflow: ask for the whole page, so it gets the script."""
    from flask import request
    if _is_index():
        for header in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_RANGE"):
            request.environ.pop(header, None)


def _add_defaults(response):
    if not _is_index() or response.status_code != 200 or response.mimetype != "text/html":
        return response
    from mlflow.server.handlers import _get_tracking_store

    try:
        views = experiment_views(_get_tracking_store())
    except Exception as e:  # noqa: BLE001 - the page still works, with MLflow's own views
        _logger.warning("reproduce: could not read the experiments' views: %s", e)
        views = {}
    response.direct_passthrough = False     # a file stream until now
    html = response.get_data(as_text=True)
    if SCRIPT_ID in html or "<head>" not in html:
        return response
    response.set_data(html.replace("<head>", "<head>" + defaults_script(views), 1))
    response.headers["Cache-Control"] = "no-store"      # it reflects the store's experiments
    for header in ("ETag", "Last-Modified"):
        response.headers.pop(header, None)
    return response


def create_app():
    """The app `mlflow server --app-name reproduce` serves: MLflow's Flask app with the index
    hook, wrapped for uvicorn (MLflow's default server) as MLflow wraps its own."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app

    if not getattr(app, "reproduce_defaults", False):
        app.before_request(_full_index)
        app.after_request(_add_defaults)
        app.reproduce_defaults = True
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app
        return create_fastapi_app(app)
    return app
