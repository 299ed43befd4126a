"""Loaded models shared by the projects serving the same one, and bounded (issue 22.4):
two Label Studio projects of one template hold one copy, SKILLLOOP_MAX_MODELS unloads the
least recently used idle model, SKILLLOOP_MODEL_IDLE_S an idle one, and a /predict for an
unloaded model loads it again and answers as before."""

from __future__ import annotations

import shutil

import pytest
from service_helpers import LABELS, predict_body, write_project
from test_multi_project import ALPHA_XML, BETA_XML, beta_predict, setup, several, write_beta

from backend.service.config import ServiceConfig
from backend.service.model_cache import ModelCache
from training.registry import Registry


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alpha_predict(project: str, text: str = "python sql") -> dict:
    return {**predict_body([text]), "project": project}


def labels_of(reply) -> list[tuple[str, str]]:
    (result,) = reply.get_json()["results"]
    return [(r["value"]["text"], r["value"]["labels"][0]) for r in result["result"]]


@pytest.fixture
def make(tmp_path, spanful_model):
    alpha = write_project(tmp_path / "templates/alpha", spanful_model, name="alpha")
    templates = (alpha, write_beta(tmp_path / "templates/beta", spanful_model))
    apps = []

    def make(**overrides):
        app = several(tmp_path, templates, studio_projects="7=alpha,8=alpha,9=beta", **overrides)
        apps.append(app)
        by_id = lambda: {s.studio_id: s for s in app.extensions["skillloop.projects"].all()}  # noqa: E731
        return app, app.extensions["skillloop.projects"].models, by_id

    yield make
    for app in apps:
        app.extensions["skillloop"].close()


def test_two_projects_of_one_template_share_one_loaded_model(make):
    app, models, by_id = make()
    client = app.test_client()
    assert setup(client, "7.1764079200", ALPHA_XML).status_code == 200
    assert setup(client, "8.1764079200", ALPHA_XML).status_code == 200
    assert models.loads == 1 and len(models) == 1  # the second project found it loaded
    seven, eight = by_id()[7].holder.current(), by_id()[8].holder.current()
    assert seven.tagger is eight.tagger is not None and seven.key == eight.key
    for project in ("7.1764079200", "8.1764079200"):
        reply = client.post("/predict", json=alpha_predict(project))
        assert labels_of(reply) == [("python", "Technology"), ("sql", "Technology")]
    assert setup(client, "9.1764079200", BETA_XML).status_code == 200  # other labels
    assert models.loads == 2 and len(models) == 2


def test_a_project_that_moves_to_its_own_version_leaves_the_shared_one(make, tmp_path):
    app, models, by_id = make()
    client = app.test_client()
    setup(client, "7.1764079200", ALPHA_XML)
    setup(client, "8.1764079200", ALPHA_XML)
    seven = by_id()[7]
    registry = Registry(seven.state.models)
    shutil.copytree(seven.project.model_base(), registry.root / ".incoming" / "a")
    version = registry.add(registry.root / ".incoming" / "a", labels=LABELS).version
    registry.promote(version, "test")
    seven.holder.promoted(registry.get(version))
    assert seven.holder.current().version == version and models.loads == 2
    assert len(models) == 2  # 8 still serves the template's base model
    by_id()[8].close()  # the last project serving the base: it is unloaded
    assert models.held() == [seven.holder.current().key]


def test_past_the_bound_the_least_used_idle_model_is_unloaded_and_loads_again(make):
    app, models, by_id = make(max_models=1)
    client = app.test_client()
    setup(client, "7.1764079200", ALPHA_XML)
    alpha = by_id()[7].holder.current()
    assert setup(client, "9.1764079200", BETA_XML).status_code == 200
    assert models.loads == 2 and models.unloads == 1 and len(models) == 1
    unloaded = by_id()[7].holder.current()
    assert unloaded.unloaded and unloaded.tagger is None and unloaded.version == alpha.version
    health = {p["studio_project"]: p for p in client.get("/health").get_json()["projects"]}
    assert health[7]["unloaded"] and not health[7]["model_loaded"]
    assert health[9]["model_loaded"] and "unloaded" not in health[9]
    # its next /predict loads it again (beta's is unloaded in turn) and answers as before
    reply = client.post("/predict", json=alpha_predict("7.1764079200"))
    assert reply.status_code == 200 and reply.get_json()["model_version"] == alpha.version
    assert labels_of(reply) == [("python", "Technology"), ("sql", "Technology")]
    assert models.loads == 3 and models.unloads == 2
    assert not by_id()[7].holder.current().unloaded and by_id()[9].holder.current().unloaded
    reply = client.post("/predict", json=beta_predict(["python sql"]))
    assert labels_of(reply) == [("python", "Skill"), ("sql", "Skill")]
    assert models.loads == 4 and len(models) == 1
    status = client.get("/status?project=7").get_json()
    assert status["model_unloaded"] and not status["model_loaded"]
    assert status["models_in_memory"] == {"held": 1, "max": 1, "loads": 4, "unloads": 3}


def test_a_model_idle_past_the_idle_time_is_unloaded(make):
    app, models, by_id = make(model_idle_s=600.0)
    clock = models.clock = FakeClock()
    client = app.test_client()
    setup(client, "7.1764079200", ALPHA_XML)
    setup(client, "9.1764079200", BETA_XML)
    clock.now += 400
    client.post("/predict", json=beta_predict(["python"]))  # beta used, alpha idle
    clock.now += 300
    assert models.unload_idle() == 1  # what each holder's watcher calls
    assert by_id()[7].holder.current().unloaded and not by_id()[9].holder.current().unloaded
    reply = client.post("/predict", json=alpha_predict("7.1764079200"))
    assert labels_of(reply) == [("python", "Technology"), ("sql", "Technology")]
    assert models.loads == 3 and len(models) == 2


class User:
    def __init__(self):
        self.told: list = []

    def unloaded(self, key) -> None:
        self.told.append(key)


def test_the_cache_never_unloads_a_model_a_prediction_runs_on():
    clock = FakeClock()
    cache = ModelCache(max_models=2, clock=clock)
    a, b = User(), User()
    assert cache.acquire("x", a, lambda: "model x") == "model x"
    clock.now += 1
    cache.acquire("y", b, lambda: "model y")
    clock.now += 1
    assert cache.acquire("x", b, lambda: pytest.fail("loaded twice")) == "model x"
    with cache.using("y"):  # x was used last, but y is predicting
        clock.now += 1
        cache.acquire("z", a, lambda: "model z")
        assert sorted(cache.held()) == ["y", "z"] and a.told == b.told == ["x"]
    with pytest.raises(OSError):
        cache.acquire("w", a, lambda: (_ for _ in ()).throw(OSError("no such model")))
    # room is made before loading (the bound holds during a load): y went, w is not held
    assert cache.held() == ["z"] and cache.loads == 3 and b.told == ["x", "y"]
    cache.release("z", a)  # no one serves it: unloaded
    assert cache.held() == [] and a.told == ["x"]


def test_the_bounds_are_settings():
    config = ServiceConfig.from_env(
        {"SKILLLOOP_MAX_MODELS": "3", "SKILLLOOP_MODEL_IDLE_S": "900"}, project="p"
    )
    assert (config.max_models, config.model_idle_s) == (3, 900.0)
    with pytest.raises(ValueError, match="max models"):
        ServiceConfig.from_env({"SKILLLOOP_MAX_MODELS": "0"}, project="p")
