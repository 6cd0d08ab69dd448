"""Argo CD integration: the Lua health check and resource actions, run as Argo CD runs them.

Every case of deploy/argocd/health_test.yaml and actions/action_test.yaml (Argo
CD's own test formats) runs through the real scripts in a real Lua 5.1
interpreter (Argo CD embeds gopher-lua, a Lua 5.1), with what Argo CD does
around them emulated:

- the object becomes Lua tables the way Argo CD decodes it (maps and arrays
  alike are tables, arrays 1-based, null fields absent), read from YAML with
  timestamps left as strings, as sigs.k8s.io/yaml does;
- a script configured in argocd-cm gets only the base, package and table
  libraries and a reduced `os` (time and date): no `string` (not even string
  methods), `math`, `io` or `debug`, so a script using them fails here too;
- the returned table is read back with gopher-json's rules (a table with keys
  1..n in order is an array, an empty table is an array) and checked as Argo CD
  checks health statuses, discovered actions and action results.

The clock the scripts see through `os` is pinned, so the run-now token is known.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import lua51

from taskmaster.core.spec import DEFAULT_HISTORY_LIMIT
from tests.support.hack import load_script

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
ACTIONS = ARGOCD / "actions"
NOW = datetime(2026, 5, 1, 8, 15, tzinfo=UTC)
HEALTH_CODES = {"Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing"}

# The base library as gopher-lua opens it, minus what reads files or compiles
# code (dofile, loadfile, load, loadstring, module): the scripts need none.
_BASE = (
    "assert error getmetatable ipairs next pairs pcall print rawequal rawget rawset "
    "select setmetatable tonumber tostring type unpack xpcall"
)
_SANDBOX = f"""
local base_names = {{}}
for name in ("{_BASE}"):gmatch("%S+") do base_names[#base_names + 1] = name end
local table_lib = {{}}
for k, v in pairs(table) do table_lib[k] = v end
local real_loadstring, real_setfenv, real_pcall = loadstring, setfenv, pcall

-- gopher-lua sets the string metatable only when the string library is opened.
debug.setmetatable("", nil)

return function(source, name, obj, action_params, os_time, os_date)
  local env = {{}}
  for _, n in ipairs(base_names) do env[n] = _G[n] end
  env._G = env
  env._VERSION = _VERSION
  env.table = table_lib
  local safe_os = {{time = os_time, date = os_date}}
  env.os = safe_os
  env.require = function(module)
    if module == "os" then return safe_os end
    error("module " .. tostring(module) .. " not found", 2)
  end
  env.obj = obj
  env.actionParams = action_params
  local fn, err = real_loadstring(source, "=" .. name)
  if not fn then return false, err end
  real_setfenv(fn, env)
  return real_pcall(fn)
end
"""


class LuaScriptError(Exception):
    """The script failed: the message Argo CD would show."""


# -- YAML as Argo CD reads it -------------------------------------------------


class _Loader(yaml.SafeLoader):
    """sigs.k8s.io/yaml goes through JSON: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)


# -- the Lua side --------------------------------------------------------------


_STRFTIME = {
    "a": "%a", "A": "%A", "b": "%b", "B": "%B", "c": "%d %b %y %H:%M %Z", "d": "%d",
    "F": "%Y-%m-%d", "H": "%H", "I": "%I", "m": "%m", "M": "%M", "p": "%p", "S": "%S",
    "x": "%H/%M/%S", "X": "%H:%M:%S", "y": "%y", "Y": "%Y", "z": "%z", "Z": "%Z", "w": "%w",
}  # fmt: skip


def _os_time(*args: Any) -> int:
    if args:
        raise LuaScriptError("os.time(table) is not emulated: no script needs it")
    return int(NOW.timestamp())


def _os_date(fmt: str = "%c", seconds: float | None = None) -> str:
    """Argo CD's os.date: a few strftime flags, `!` for UTC, no `*t` needed here."""
    when = NOW.astimezone()
    if fmt.startswith("!"):
        fmt, when = fmt[1:], NOW
    if seconds is not None:
        when = datetime.fromtimestamp(seconds).astimezone()  # as gopher-lua: local time
    if fmt.startswith("*t"):
        raise LuaScriptError("os.date('*t') is not emulated: no script needs it")
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            flag = fmt[i + 1]
            if flag not in _STRFTIME:
                raise LuaScriptError(f"os.date: %{flag} is not a flag Argo CD supports")
            out.append(when.strftime(_STRFTIME[flag]))
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


@dataclass
class Lua:
    runtime: Any
    run: Callable[..., Any]

    def to_lua(self, value: Any) -> Any:
        """Argo CD's decodeValue: maps and arrays to tables, null to nil."""
        if isinstance(value, dict):
            table = self.runtime.table()
            for key, item in value.items():
                if item is not None:
                    table[key] = self.to_lua(item)
            return table
        if isinstance(value, list):
            table = self.runtime.table()
            for index, item in enumerate(value, start=1):
                table[index] = self.to_lua(item)
            return table
        return value

    def execute(
        self, script: Path, obj: dict[str, Any], params: dict[str, str] | None = None
    ) -> Any:
        return self.source(script.read_text(), script.relative_to(ARGOCD).as_posix(), obj, params)

    def source(
        self, text: str, name: str, obj: dict[str, Any], params: dict[str, str] | None = None
    ) -> Any:
        """Run a script as Argo CD does: `obj` and `actionParams` set, its result as JSON."""
        ok, result = self.run(
            text, name, self.to_lua(obj), self.to_lua(params or {}), _os_time, _os_date
        )
        if not ok:
            raise LuaScriptError(str(result))
        return from_lua(result)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def from_lua(value: Any) -> Any:
    """gopher-json's Encode: keys 1..n in iteration order make an array, else an object."""
    if lua51.lua_type(value) == "table":
        array: list[Any] = []
        obj: dict[str, Any] | None = None
        for key, item in value.items():
            converted = from_lua(item)
            if isinstance(key, int | float) and not isinstance(key, bool) and obj is None:
                if key == len(array) + 1:
                    array.append(converted)
                    continue
                obj = {str(i): v for i, v in enumerate(array, start=1)}
                obj[str(_number(key))] = converted
                continue
            if obj is None:
                obj = {str(i): v for i, v in enumerate(array, start=1)}
            obj[str(_number(key)) if isinstance(key, int | float) else str(key)] = converted
        return obj if obj is not None else array
    if lua51.lua_type(value) is not None:
        raise LuaScriptError(f"cannot encode a Lua {lua51.lua_type(value)} to JSON")
    if isinstance(value, float):
        return _number(value)
    return value


@pytest.fixture(scope="module")
def lua() -> Lua:
    runtime = lua51.LuaRuntime(
        register_eval=False, register_builtins=False, unpack_returned_tuples=True
    )
    return Lua(runtime, runtime.execute(_SANDBOX))


# -- what Argo CD does with the result -----------------------------------------


def health_status(result: Any) -> dict[str, str]:
    """ExecuteHealthLua: a table with a valid status, else Unknown."""
    if result is None or result == []:
        return {"status": "", "message": ""}
    if not isinstance(result, dict):
        raise LuaScriptError(f"expect table output from Lua script, not {type(result).__name__}")
    status = {"status": result.get("status", ""), "message": result.get("message", "")}
    if status["status"] not in HEALTH_CODES:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return status


def discovered(result: Any) -> list[dict[str, Any]]:
    """ExecuteResourceActionDiscovery: name -> {disabled, iconClass, displayName}."""
    if result == []:
        return []
    assert isinstance(result, dict), "discovery.lua must return a table of actions"
    actions = []
    for name, value in result.items():
        fields = value if isinstance(value, dict) else {}
        actions.append(
            {
                "name": name,
                "disabled": fields.get("disabled") is True,
                "iconClass": fields.get("iconClass", ""),
                "displayName": fields.get("displayName", ""),
            }
        )
    return sorted(actions, key=lambda a: a["name"])


def expected_actions(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    defaults = {"disabled": False, "iconClass": "", "displayName": ""}
    return sorted(({**defaults, **entry} for entry in entries), key=lambda a: a["name"])


def _clean(new: Any, old: Any) -> Any:
    """cleanReturnedObj: an empty map the script did not fill comes back as [], not {}."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: _clean(v, old[k]) if k in old else v for k, v in new.items()}
    if new == [] and isinstance(old, dict):
        return {}
    if isinstance(new, list) and isinstance(old, list):
        return [_clean(v, old[i]) if i < len(old) else v for i, v in enumerate(new)]
    return new


def impacted(result: Any, source: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """ExecuteResourceAction: an array of {operation, resource}, or the patched object."""
    if isinstance(result, list):
        out = []
        for entry in result:
            assert entry["operation"] in ("create", "patch"), entry["operation"]
            resource = entry["resource"]
            if entry["operation"] == "patch":
                resource = _clean(resource, source)
            out.append((entry["operation"], resource))
        return out
    assert isinstance(result, dict), "an action returns the object or a list of them"
    return [("patch", _clean(result, source))]


def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta.get("name", "")


# -- the cases -------------------------------------------------------------------


def health_cases() -> Iterator[Any]:
    for case in load(ARGOCD / "health_test.yaml")["tests"]:
        yield pytest.param(case, id=case["inputPath"])


def discovery_cases() -> Iterator[Any]:
    for case in load(ACTIONS / "action_test.yaml")["discoveryTests"]:
        yield pytest.param(case, id=case["inputPath"])


def action_cases() -> Iterator[Any]:
    for case in load(ACTIONS / "action_test.yaml")["actionTests"]:
        yield pytest.param(case, id=f"{case['action']}:{case['inputPath']}")


@pytest.mark.parametrize("case", list(health_cases()))
def test_health(lua: Lua, case: dict[str, Any]) -> None:
    obj = load(ARGOCD / case["inputPath"])

    health = health_status(lua.execute(ARGOCD / "health.lua", obj))

    assert health == {"message": "", **case["healthStatus"]}


@pytest.mark.parametrize("case", list(discovery_cases()))
def test_action_discovery(lua: Lua, case: dict[str, Any]) -> None:
    obj = load(ACTIONS / case["inputPath"])

    actions = discovered(lua.execute(ACTIONS / "discovery.lua", obj))

    assert actions == expected_actions(case["result"])
    for action in actions:
        assert (ACTIONS / action["name"] / "action.lua").is_file()


@pytest.mark.parametrize("case", list(action_cases()))
def test_action(lua: Lua, case: dict[str, Any]) -> None:
    source = load(ACTIONS / case["inputPath"])
    script = ACTIONS / case["action"] / "action.lua"

    if case.get("expectedErrorMessage"):
        with pytest.raises(LuaScriptError) as error:
            lua.execute(script, source, case.get("parameters"))
        assert str(error.value) == case["expectedErrorMessage"]
        return
    results = impacted(lua.execute(script, source, case.get("parameters")), source)

    expected_text = (ACTIONS / case["expectedOutputPath"]).read_text()
    expected_doc = load(ACTIONS / case["expectedOutputPath"])
    if expected_text.lstrip().startswith("-"):
        expected = [(e["k8sOperation"], e["unstructuredObj"]) for e in expected_doc]
    else:
        expected = [("patch", expected_doc)]
    assert results == expected
    for operation, resource in results:
        if operation == "patch":  # Argo CD patches only the object the action ran on
            assert identity(resource) == identity(source)


def test_the_health_check_assumes_the_operators_default_history_limit() -> None:
    """A task without spec.historyLimit keeps the operator's default number of runs."""
    source = (ARGOCD / "health.lua").read_text()
    (value,) = re.findall(r"^local DEFAULT_HISTORY_LIMIT = (\d+)$", source, re.M)
    assert int(value) == DEFAULT_HISTORY_LIMIT


def test_the_cases_cover_the_acceptance_statuses_and_every_file() -> None:
    health = [case.values[0] for case in health_cases()]
    statuses = {c["healthStatus"]["status"] for c in health}
    suspended = next(c for c in health if c["inputPath"] == "testdata/suspended.yaml")
    invalid = next(c for c in health if c["inputPath"] == "testdata/invalid.yaml")
    actions = load(ACTIONS / "action_test.yaml")
    used = {ARGOCD / c["inputPath"] for c in health} | {
        ACTIONS / path
        for c in actions["discoveryTests"] + actions["actionTests"]
        for path in (c["inputPath"], c.get("expectedOutputPath"))
        if path
    }

    assert {"Healthy", "Progressing", "Degraded"} <= statuses
    assert "Suspended" not in statuses
    assert suspended["healthStatus"]["status"] == "Healthy"
    assert invalid["healthStatus"]["status"] == "Degraded"
    assert used == {*(ARGOCD / "testdata").glob("*.yaml"), *(ACTIONS / "testdata").glob("*.yaml")}


def test_every_action_is_discoverable_and_configured() -> None:
    on_disk = {p.parent.name for p in ACTIONS.glob("*/action.lua")}
    discovered_names = {
        a["name"] for c in load(ACTIONS / "action_test.yaml")["discoveryTests"] for a in c["result"]
    }

    assert on_disk == discovered_names == set(argocd_cm().ACTIONS)


# -- the sandbox is as strict as Argo CD's --------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        'return string.format("%d", 1)',
        'return ("abc"):upper()',
        "return math.floor(1.5)",
        'return io.open("/etc/hostname")',
        "return os.getenv('HOME')",
        "return os.execute('true')",
        "return debug.traceback()",
        "return require('string')",
    ],
)
def test_the_sandbox_lacks_what_argocd_lacks(lua: Lua, source: str) -> None:
    with pytest.raises(LuaScriptError):
        lua.source(source, "probe", {})


def test_the_sandbox_has_what_argocd_has(lua: Lua) -> None:
    source = """
      local t = {3, 1, 2}
      table.sort(t)
      local os2 = require("os")
      return {sorted = table.concat(t, ","), n = table.getn(t), kind = type(os2.time()),
              date = os.date("!%Y-%m-%dT%H:%M:%SZ"), text = "n=" .. 2, s = tostring(nil)}
    """

    assert lua.source(source, "probe", {}) == {
        "sorted": "1,2,3",
        "n": 3,
        "kind": "number",
        "date": "2026-05-01T08:15:00Z",
        "text": "n=2",
        "s": "nil",
    }


def test_objects_go_in_and_tables_come_back_as_argocd_converts_them(lua: Lua) -> None:
    source = """
      return {list = {1, 2}, map = {a = 1}, empty = {}, holes = {[2] = "b"},
              seen = {n = obj.n, absent = obj.absent == nil, first = obj.items[1]}}
    """
    obj = {"n": 2, "absent": None, "items": ["x", "y"]}

    assert lua.source(source, "probe", obj) == {
        "list": [1, 2],
        "map": {"a": 1},
        "empty": [],
        "holes": {"2": "b"},
        "seen": {"n": 2, "absent": True, "first": "x"},
    }


# -- the argocd-cm snippet -------------------------------------------------------


def argocd_cm() -> ModuleType:
    return load_script("argocd_cm")


def test_the_argocd_cm_snippet_is_generated_from_the_scripts() -> None:
    assert (ARGOCD / "argocd-cm.yaml").read_text() == argocd_cm().render(), (
        "deploy/argocd/argocd-cm.yaml is stale: run `make argocd-cm`"
    )


def test_the_argocd_cm_snippet_embeds_the_scripts_under_argocd_keys() -> None:
    data = load(ARGOCD / "argocd-cm.yaml")["data"]
    actions = yaml.safe_load(data["resource.customizations.actions.taskmaster.dev_ScheduledTask"])

    assert data["resource.customizations.health.taskmaster.dev_ScheduledTask"] == (
        (ARGOCD / "health.lua").read_text()
    )
    assert actions["discovery.lua"] == (ACTIONS / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        p.parent.name: p.read_text() for p in ACTIONS.glob("*/action.lua")
    }
    assert yaml.safe_load(
        data["resource.customizations.ignoreResourceUpdates.taskmaster.dev_ScheduledTask"]
    ) == {"jsonPointers": ["/status"]}
    # Custom scripts run without the standard libraries unless this says otherwise.
    assert not any(key.startswith("resource.customizations.useOpenLibs") for key in data)


# -- the Application example -------------------------------------------------------


def applications() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((ARGOCD / "application.yaml").read_text())
    return {doc["metadata"]["name"]: doc for doc in docs if doc}


def test_the_applications_use_waves_server_side_apply_and_diff() -> None:
    apps = applications()
    operator, tasks = apps["taskmaster"], apps["taskmaster-tasks"]

    for app in (operator, tasks):
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert app["kind"] == "Application"
        annotations = app["metadata"]["annotations"]
        assert "ServerSideDiff=true" in annotations["argocd.argoproj.io/compare-options"]
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    wave = "argocd.argoproj.io/sync-wave"
    assert int(operator["metadata"]["annotations"][wave]) < int(
        tasks["metadata"]["annotations"][wave]
    )
    chart = operator["spec"]["source"]
    assert chart["path"] == "deploy/helm/taskmaster"
    assert chart["helm"]["valuesObject"]["crds"]["install"] is True
    assert chart["helm"]["valuesObject"]["webhook"]["enabled"] is True


def test_the_webhook_ca_bundle_is_no_drift() -> None:
    operator = applications()["taskmaster"]
    ignored = operator["spec"]["ignoreDifferences"]

    assert {
        "group": "admissionregistration.k8s.io",
        "kind": "ValidatingWebhookConfiguration",
        "jqPathExpressions": [".webhooks[]?.clientConfig.caBundle"],
    } in ignored
    assert "RespectIgnoreDifferences=true" in operator["spec"]["syncPolicy"]["syncOptions"]
