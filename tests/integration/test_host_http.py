"""The local host's HTTP triggers: routePrefix, route templates, methods, auth levels and keys,
request/response translation, functionTimeout, errors and the static folder."""

import json
import time

import pytest
import requests

from local.testing.host_process import FIXTURE_APP, copy_app, fixture_settings


@pytest.fixture
def host(host_factory, azurite, tmp_path):
    return host_factory(FIXTURE_APP, fixture_settings(azurite, tmp_path))


def test_route_params_query_headers_and_methods(host):
    r = requests.get(host.url + "/api/hello/ada?q=42", headers={"x-test": "yes"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"  # the worker adds charset to text/* only
    assert r.json() == {
        "name": "ada",
        "q": "42",
        "method": "GET",
        "url": host.url + "/api/hello/ada?q=42",
        "agent": "yes",
    }
    assert requests.post(host.url + "/api/hello/ada").status_code == 404  # GET only
    assert requests.get(host.url + "/hello/ada").status_code == 404  # outside the routePrefix
    assert "Executed 'Functions.hello' (Succeeded, Id=" in host.wait_for_log("Executed 'Functions.hello'")


def test_function_level_needs_a_key(host):
    url = host.url + "/api/items/7"
    assert requests.get(url).status_code == 401
    assert requests.get(url, params={"code": "wrong"}).status_code == 401
    r = requests.get(url, params={"code": host.keys["host"]["default"]})
    assert r.status_code == 200 and r.json() == {"id": "7", "tag": None, "method": "GET", "body": ""}
    r = requests.put(url + "/red", data=b"payload", headers={"x-functions-key": host.keys["master"]})
    assert r.status_code == 201 and r.headers["x-item"] == "7"
    assert r.json() == {"id": "7", "tag": "red", "method": "PUT", "body": "payload"}
    # {id:int} rejects a non-number before any key is checked
    assert requests.get(host.url + "/api/items/abc", params={"code": host.keys["master"]}).status_code == 404


def test_admin_level_takes_only_the_master_key(host):
    url = host.url + "/api/admin-only"
    assert requests.get(url, params={"code": host.keys["host"]["default"]}).status_code == 401
    r = requests.get(url, headers={"x-functions-key": host.keys["master"]})
    assert r.status_code == 200 and r.text == "admin ok"


def test_keys_from_the_local_key_file(host_factory, azurite, tmp_path):
    root = copy_app(tmp_path)
    host = host_factory(root, fixture_settings(azurite, tmp_path, FUNCTIONS_KEYS=""))
    keys = json.loads((root / ".local" / "function-keys.json").read_text())
    assert requests.get(host.url + "/api/items/1").status_code == 401
    assert requests.get(host.url + "/api/items/1", params={"code": keys["master"]}).status_code == 200
    assert keys["master"] not in host.logs


def test_a_function_disabled_by_setting_is_not_served(host_factory, azurite, tmp_path):
    host = host_factory(FIXTURE_APP, fixture_settings(azurite, tmp_path, **{"AzureWebJobs.hello.Disabled": "true"}))
    assert requests.get(host.url + "/api/hello/ada").status_code == 404
    assert requests.get(host.url + "/api/boom").status_code == 500  # the others still are


def test_handler_exception_is_a_500(host):
    assert requests.get(host.url + "/api/boom").status_code == 500
    assert "Executed 'Functions.boom' (Failed" in host.wait_for_log("Executed 'Functions.boom'")


@pytest.mark.parametrize("path", ["/api/sleep/async?s=30", "/api/sync-sleep?s=30"])
def test_function_timeout_answers_500(host, path):
    started = time.monotonic()
    r = requests.get(host.url + path, timeout=20)
    elapsed = time.monotonic() - started
    assert r.status_code == 500
    assert 3.5 < elapsed < 8  # functionTimeout is 4 s, the handler wanted 30
    host.wait_for_log("Timeout value of 00:00:04 exceeded")


def test_sync_handlers_run_in_parallel_in_the_pool(host_factory, azurite, tmp_path):
    host = host_factory(FIXTURE_APP, fixture_settings(azurite, tmp_path, PYTHON_THREADPOOL_THREAD_COUNT=4))
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: requests.get(host.url + "/api/sync-sleep?s=1").status_code, range(4)))
    assert codes == [200] * 4
    assert time.monotonic() - started < 2.5  # four 1 s sleeps at once, not one after another


def test_route_prefix_from_host_json(host_factory, azurite, tmp_path):
    host = host_factory(copy_app(tmp_path, routePrefix=""), fixture_settings(azurite, tmp_path))
    assert requests.get(host.url + "/hello/bob").json()["name"] == "bob"


def test_static_folder_at_root(host_factory, azurite, tmp_path):
    static = tmp_path / "site"
    (static / "js").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>t</title><p>index page</p>")
    (static / "js" / "app.js").write_text("export const x = 1;\n")
    (tmp_path / "secret.txt").write_text("outside")
    host = host_factory(FIXTURE_APP, fixture_settings(azurite, tmp_path), static_dir=static)

    r = requests.get(host.url + "/")
    assert r.status_code == 200 and "index page" in r.text and r.headers["Content-Type"].startswith("text/html")
    r = requests.get(host.url + "/js/app.js")
    assert r.status_code == 200 and "javascript" in r.headers["Content-Type"]
    assert requests.get(host.url + "/missing.css").status_code == 404
    assert requests.get(host.url + "/%2e%2e/secret.txt").status_code == 404
    assert requests.get(host.url + "/api/hello/x").status_code == 200  # functions still win


@pytest.mark.parametrize(
    "template,path,expected",
    [
        ("api/items/{id:int}", "/api/items/12", {"id": "12"}),
        ("api/items/{id:int}", "/api/items/x", None),
        ("api/items/{id?}", "/api/items", {}),
        ("api/files/{*rest}", "/api/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        (
            "api/u/{id:guid}",
            "/api/u/0f8fad5b-d9cb-469f-a165-70867728950e",
            {"id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        ),
        ("api/u/{id:guid}", "/api/u/nope", None),
        ("api/c/{code:regex(^[a-z]{{2}}$)}", "/api/c/ab", {"code": "ab"}),
        ("api/c/{code:alpha:minlength(2)}", "/api/c/a1", None),
    ],
)
def test_route_templates(template, path, expected):
    from local.host.routes import compile_route

    assert compile_route(template).match(path) == expected
