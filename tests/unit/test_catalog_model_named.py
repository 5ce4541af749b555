"""``model_named``: the current catalog model a ``ValidationError``'s title names, so that a
refusal of a whole event can say its texts' bounds. A title two current models share (one kept
under its old name in another module, say) must be refused, not resolved to either."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from events import catalog_registry
from events.catalog.base import CaseEvent
from events.catalog.clients import ClientRegistered
from events.catalog_registry import current_models, model_named


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    """The lookup is built once per process: built again for the test and after it."""
    catalog_registry._models_by_name.cache_clear()
    yield
    catalog_registry._models_by_name.cache_clear()


@pytest.mark.usefixtures("fresh_lookup")
def test_each_current_model_is_found_by_the_title_of_its_refusals() -> None:
    for model in current_models():
        with pytest.raises(ValidationError) as refused:
            model.model_validate({})
        assert model_named(refused.value.title) is model
    assert model_named("WorkerCredential") is None  # not an event


@pytest.mark.usefixtures("fresh_lookup")
def test_two_current_models_of_one_name_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the old code the second silently took the name: ClientRegistered was the copy."""
    copy: type[CaseEvent] = type(
        "ClientRegistered", (ClientRegistered,), {"__module__": "events.catalog.clients_v3"}
    )
    monkeypatch.setattr(catalog_registry, "current_models", lambda: (ClientRegistered, copy))
    with pytest.raises(ValueError, match="two current catalog models are titled") as refused:
        model_named("ClientRegistered")
    assert "events.catalog.clients.ClientRegistered" in str(refused.value)
    assert "events.catalog.clients_v3.ClientRegistered" in str(refused.value)
