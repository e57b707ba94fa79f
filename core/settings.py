"""The one settings object: defaults < TOML file < ``SHOPTAG_*`` environment variables < explicit overrides.

Nested sections use ``__`` in env vars, e.g. ``SHOPTAG_ES__URL=http://localhost:9200`` or
``SHOPTAG_TAGGER__TARGET_PRECISION=0.95``. The TOML file is ``shoptag.toml`` in the working directory,
or the path in ``SHOPTAG_CONFIG`` / ``--config``. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import BadInput


class Section(BaseModel):
    """A settings section: a key it does not know is an error, so a misspelt `api_key` never passes silently."""

    model_config = ConfigDict(extra="forbid")


class EncoderSettings(Section):
    """Which models turn a product into vectors."""

    # Alias (`minilm`, `use-multilingual`, `e5-small`), hub name or local path of a sentence-transformers model.
    text_model: str = "minilm"
    # open_clip architecture name (e.g. `ViT-B-32`), or None for text-only catalogs.
    image_model: str | None = None
    # open_clip pretrained tag (hub) or a local checkpoint path (e.g. one made by `shoptag train-clip`).
    image_checkpoint: str | None = None
    # Weight of the image half in the fused vector when a product has an image (text gets 1 - this).
    image_weight: float = Field(0.35, ge=0.0, le=1.0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # On the CPU, run sentence-transformers models with ONNX Runtime from a one-time export (same vectors,
    # no torch import per run); the export goes to onnx_cache (default: the workspace's cache/onnx).
    onnx: bool = True
    onnx_cache: Path | None = None
    batch_size: int = Field(64, ge=1)
    image_batch_size: int = Field(128, ge=1)


class IndexSettings(Section):
    """FAISS index over product vectors."""

    # `auto`: exact search up to 100k vectors, then IVF with 8-bit codes, then product codes when those do not fit
    # `memory_budget_mb` (vectors/index_choice.py); or any faiss factory string.
    factory: str = "auto"
    memory_budget_mb: int = Field(2048, ge=1)  # what one index's vectors may take, for `auto`
    use_gpu: bool = True  # only when the installed faiss has GPU support
    nprobe: int = Field(16, ge=1)  # inverted lists an IVF search visits
    hnsw_ef_search: int = Field(64, ge=1)  # candidate list of an HNSW search


class TaggerSettings(Section):
    """How tags are chosen and calibrated."""

    knn_k: int = Field(20, ge=1)
    target_precision: float = Field(0.9, gt=0.0, le=1.0)
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, ge=0.0, lt=0.5)
    head_epochs: int = Field(60, ge=1)
    head_patience: int = Field(6, ge=1)
    head_hidden: int = Field(0, ge=0)  # 0: linear softmax head; >0: one hidden layer of this width
    lexical: bool = True  # TF-IDF word+char n-gram source beside the embeddings
    # tags seen fewer times are not learnt; 1 keeps every value (one-example values share a pooled threshold)
    min_tag_count: int = Field(1, ge=1)
    # thresholds accept a tag when the lower confidence bound of its precision on validation (one-sided Wilson
    # at this confidence; 0: the point estimate) reaches target_precision, so the target holds on new products
    precision_confidence: float = Field(0.95, ge=0.0, lt=1.0)
    # grouped split: products with the same normalised title, or fused vectors at least this cosine-similar
    # (None: titles only), are on the same side of train / validation / test
    split_similarity: float | None = Field(0.97, gt=0.0, le=1.0)
    seed: int = 13


class TaxonomySettings(Section):
    """Tags without examples: a taxonomy tree, tags a shop declares, and rules applied after the model."""

    # Taxonomy tree: Google (`id - A > B`), Shopify (`aa-1 : A > B`) or `A > B > C | synonyms | description` lines.
    file: Path | None = None
    # Families that are the tree's levels, top first (e.g. masterCategory, subCategory, articleType): decided
    # as one path, a child implying its ancestors. Without `file`, the paths come from the labels.
    levels: list[str] = []
    # Zero-shot tags: `family: value | synonyms | description` lines (accepted suggestions are added to
    # the workspace's own file, tags.txt).
    tags: Path | None = None
    # Rules: `title contains "..." -> family: value` and `never family=value when family=value` lines.
    rules: Path | None = None
    # A declared family stays zero-shot ("needs review") until each of its values has this many labelled examples.
    min_reviewed: int = Field(5, ge=1)


class CatalogSettings(Section):
    """Limits that make a record bad."""

    max_text_chars: int = Field(20_000, ge=1)
    max_image_bytes: int = Field(20_000_000, ge=1)
    # decoded width × height: a small file can hold a huge image (13000×13000 PNG: 490 KB, 500 MB decoded)
    max_image_pixels: int = Field(40_000_000, ge=1)
    allow_image_urls: bool = False  # fetching images needs network access
    # Attributes that are numbers: indexed as numbers (range filters, range facets, price sorts); a record whose
    # value of one is not a number is rejected at ingest. Every other attribute is a keyword.
    numeric_attributes: list[str] = ["price"]


class ESSettings(Section):
    """Elasticsearch connection and index names. `url` unset means the embedded backend is used."""

    url: str | None = None
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0
    max_retries: int = 5
    index_alias: str = "shoptag-products"
    mapping_version: str = "v1"
    vector_index_type: Literal["hnsw", "int8_hnsw", "int4_hnsw", "flat", "int8_flat", "bbq_hnsw", "bbq_flat"] = (
        "int8_hnsw"
    )
    # shards and replicas of each new index; during a full build it has no replicas and no refresh, and
    # these (and `refresh_interval`) are restored before the alias moves to it
    number_of_shards: int = Field(1, ge=1)
    number_of_replicas: int = Field(1, ge=0)
    refresh_interval: str = "1s"
    # upserts and deletes return once searchable (refresh=wait_for) instead of within `refresh_interval`
    wait_for_refresh: bool = False
    # a full reindex holds a lock per alias in Elasticsearch; a crashed run's lock expires after this long
    lock_ttl: float = Field(120.0, gt=0)
    bulk_chunk_size: int = Field(500, ge=1)
    # bulk items rejected with 429 are retried `max_retries` times, waiting initial * 2**attempt up to max
    bulk_initial_backoff: float = Field(2.0, gt=0)
    bulk_max_backoff: float = Field(60.0, gt=0)
    # hybrid search: `rrf` retriever, client-side fusion of two searches (`client`), or `auto` (rrf, falling
    # back to client-side fusion when the cluster rejects the retriever: no license, or older than 8.14)
    hybrid: Literal["auto", "rrf", "client"] = "auto"
    # `similar`: FAISS in the workspace, built from the same vectors and kept in step by every write and
    # reindex (`faiss`), or the cluster's kNN (`knn`, which asks for the vectors 9.2+ leaves out of `_source`)
    similar: Literal["faiss", "knn"] = "faiss"

    @field_validator("url")
    @classmethod
    def _whole_url(cls, url: str | None) -> str | None:
        """The official client needs scheme, host and port; `localhost:9200` or `http://es-host` would end in
        its traceback at the first request instead of here."""
        if url is None:
            return None
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise ValueError(f"{url[:80]!r} needs a scheme, a host and a port, e.g. http://localhost:9200 "
                             "or https://my-cluster.example.com:443")
        return url


class SearchSettings(Section):
    """What one storefront search may ask for, and how query understanding weighs in."""

    max_size: int = Field(100, ge=1, le=1000)  # hits per page
    # from + size without a cursor, and the deepest relevance ranking (Elasticsearch's index.max_result_window is
    # 10,000; deep from/size is slow everywhere, a cursor is not)
    max_window: int = Field(1000, ge=1, le=10_000)
    query_tags: Literal["boost", "suggest", "off"] = "boost"  # default use of the tagger on the query
    # added to a text match's BM25 score per boosted tag family it carries (Elasticsearch: the `terms` boost)
    boost_weight: float = Field(2.0, ge=0.0)
    # the kNN half of a search keeps only products at least this cosine-similar to the query, so hits, the total
    # and the facets are the text matches plus the query's real neighbours, not `window` products whatever they
    # are (a query for something the catalog lacks has no candidates); `auto`: the text encoder's own cutoff
    # (`pipeline.search.NEIGHBOUR_COSINE`; none for an encoder without one); None: the whole window
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] | Literal["auto"] | None = "auto"


class ServiceSettings(Section):
    """HTTP service limits and auth."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: SecretStr | None = None  # when set, write endpoints need header `X-API-Key`
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(5_000_000, ge=1)
    # Folder that image paths sent to `POST /products` are resolved in (and must stay inside); unset: products
    # sent to the service cannot name local images, so a client can never make the server read its files.
    image_root: Path | None = None
    # Images `POST /products` decodes at once (to validate them) across all requests: each may take up to
    # catalog.max_image_pixels × 4 bytes, so this bounds the memory concurrent big images can take.
    max_image_decodes: int = Field(2, ge=1)


class ReviewSettings(Section):
    """The learning loop: when a retrained model may replace the current one (`train --if-better`)."""

    # A candidate may be worse than the current model by at most this much, per family, in weighted F1 and in
    # coverage at the target precision on the held-out split; `tolerance_by_family` overrides it per family.
    tolerance: float = Field(0.01, ge=0.0, le=1.0)
    tolerance_by_family: dict[str, float] = {}
    # Families with fewer held-out labels than this are reported but not judged (too few to tell).
    guard_min_test: int = Field(20, ge=1)
    # A family counts as worse only when the candidate is below by more than its tolerance on the held-out
    # products and in at least this share of paired bootstrap resamples of them: on a few dozen products one
    # product moves weighted F1 by several points, and a point estimate alone refuses good candidates for noise.
    guard_confidence: float = Field(0.9, gt=0.0, lt=1.0)
    # The service runs `train --if-better` after this many new review decisions (0: never).
    retrain_after: int = Field(0, ge=0)
class BehaviourSettings(BaseModel):
    """Shopper events and the recommendations learnt from them (docs/BEHAVIOUR.md)."""

    # events older than the newest stored event minus this many days are deleted at each ingest (None: keep all)
    retention_days: int | None = Field(730, ge=1)
    half_life_days: float = Field(30.0, gt=0)  # age at which an event counts half, for co-engagement and profiles
    popularity_half_life_days: float = Field(14.0, gt=0)  # the same for "popular now"
    user_share: float = Field(0.5, ge=0.0, le=1.0)  # co-occurrence in user histories vs. in one basket
    shrink: float = Field(5.0, ge=0.0)  # damps similarities resting on few co-occurrences
    neighbours: int = Field(100, ge=1)  # co-engaged items kept per item
    history_limit: int = Field(500, ge=1)  # a user's most recent events read for their profile
    refresh_seconds: float = Field(300.0, ge=0.0)  # the service rebuilds the model at most this often
    # personal recommendations: shares of each score source (chosen on a validation period, docs/BENCHMARKS.md)
    weight_repeat: float = Field(1.0, ge=0.0)
    weight_cobought: float = Field(0.5, ge=0.0)
    weight_content: float = Field(0.1, ge=0.0)
    weight_popular: float = Field(0.05, ge=0.0)
    weight_neighbours: float = Field(0.5, ge=0.0)
    similar_users: int = Field(50, ge=1)  # neighbours of a user for the `neighbours` source
    # `similar --mode blend`: share of co-engagement vs. content similarity
    blend_behaviour_weight: float = Field(0.7, ge=0.0, le=1.0)
    # `user=` on search and similar: how much the user's profile may move a hit (0: not at all)
    rerank_strength: float = Field(0.3, ge=0.0)
    trend_days: int = Field(28, ge=1)  # demand per tag: units in this many days vs. the same span before
    # tags derived from behaviour (always "needs review", docs/BEHAVIOUR.md): the family seasons are written in,
    # and an item's least units and least lift of its season share over the shop's for a season's tag
    seasonal_family: str = Field("season", min_length=1)
    seasonal_min_units: float = Field(50.0, ge=1.0)
    seasonal_min_lift: float = Field(3.0, gt=1.0)
    # a value the tagger scored at most this far under its threshold, on a product of which at least this share
    # of the co-purchase weight goes to products carrying the value, is proposed for review
    near_miss_margin: float = Field(0.15, gt=0.0, le=1.0)
    near_miss_min_share: float = Field(0.3, gt=0.0, le=1.0)


class Settings(BaseSettings):
    """Everything a shoptag run can be told; passed in explicitly, never read from a global."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPTAG_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    workspace: Path = Path("shoptag-workspace")
    encoders: EncoderSettings = EncoderSettings()
    index: IndexSettings = IndexSettings()
    tagger: TaggerSettings = TaggerSettings()
    catalog: CatalogSettings = CatalogSettings()
    taxonomy: TaxonomySettings = TaxonomySettings()
    es: ESSettings = ESSettings()
    search: SearchSettings = SearchSettings()
    service: ServiceSettings = ServiceSettings()
    review: ReviewSettings = ReviewSettings()
    behaviour: BehaviourSettings = BehaviourSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("SHOPTAG_CONFIG", "shoptag.toml")
        if not toml_path:  # SHOPTAG_CONFIG="" reads no settings file
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))

    @property
    def backend(self) -> Literal["embedded", "es"]:
        return "es" if self.es.url else "embedded"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, reading `config` as the TOML file when given; `BadInput` naming what is wrong with
    the file, an environment variable or an override (an unknown key with the closest valid one)."""
    if config is not None and not config.is_file():
        raise BadInput(f"settings file not found: {config}")
    named = os.environ.get("SHOPTAG_CONFIG")
    if config is None and named and not Path(named).is_file():
        raise BadInput(f"settings file not found: {named} (from SHOPTAG_CONFIG; set it to \"\" for none)")
    unknown_variables()
    previous = os.environ.get("SHOPTAG_CONFIG")
    if config is not None:
        os.environ["SHOPTAG_CONFIG"] = str(config)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        source = os.environ.get("SHOPTAG_CONFIG", "shoptag.toml")
        where = f"in {source} or the SHOPTAG_* variables" if source and Path(source).is_file() else "in the SHOPTAG_* variables"
        raise BadInput(f"{settings_problems(exc)} ({where})") from None
    except ValueError as exc:  # a SettingsError, or a TOML syntax error
        raise BadInput(f"settings error: {exc}") from None
    finally:
        if config is not None:
            if previous is None:
                os.environ.pop("SHOPTAG_CONFIG", None)
            else:
                os.environ["SHOPTAG_CONFIG"] = previous


# SHOPTAG_* variables that are not settings: the settings file, and what the tests and benchmarks read
NOT_SETTINGS = {"CONFIG", "DATA_DIR", "TEST_ES_URL", "ES_SPEC", "RECORD_GOLDEN", "REVIEW_SCREENSHOTS"}


def unknown_variables() -> None:
    """`BadInput` for a SHOPTAG_* variable whose section or key is no setting: pydantic-settings would ignore
    `SHOPTAG_TAGER__TARGET_PRECISION` silently, and the run would go on with the default."""
    for name in sorted(os.environ):
        if not name.startswith("SHOPTAG_") or name[len("SHOPTAG_"):] in NOT_SETTINGS:
            continue
        head = name[len("SHOPTAG_"):].split("__", 1)[0].lower()
        if head in Settings.model_fields:
            continue
        split = _one_underscore(head)
        if split:
            hint = f"; did you mean SHOPTAG_{split[0].upper()}__{split[1].upper()}? (two underscores between section and key)"
        else:
            close = _closest(head, Settings)
            hint = f"; did you mean SHOPTAG_{close.upper()}{name[len('SHOPTAG_') + len(head):]}?" if close else ""
        raise BadInput(f"unknown settings variable {name}{hint}")


def _one_underscore(head: str) -> tuple[str, str] | None:
    """(section, key) when `head` is a section and one of its keys joined by a single underscore
    (`es_url`), the likeliest slip in a nested variable's name."""
    for i, char in enumerate(head):
        if char != "_":
            continue
        field = Settings.model_fields.get(head[:i])
        section = field.annotation if field is not None else None
        if isinstance(section, type) and issubclass(section, BaseModel) and head[i + 1:] in section.model_fields:
            return head[:i], head[i + 1:]
    return None


# sections by the long names people write for them (spelling distance alone finds `search` for these)
SECTION_NAMES = {"elasticsearch": "es", "elastic": "es"}


def _closest(name: str, section: type[BaseModel]) -> str | None:
    """The valid key of `section` (the top level: a section name) that `name` most likely meant, if any."""
    if section is Settings and name in SECTION_NAMES:
        return SECTION_NAMES[name]
    close = difflib.get_close_matches(name, list(section.model_fields), n=1, cutoff=0.5)
    return close[0] if close else None


def settings_problems(error: ValidationError) -> str:
    """Each problem as `key: what is wrong`; an unknown key with the valid key it is closest to."""
    problems = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] != "extra_forbidden":
            problems.append(f"{key}: {e['msg']}")
            continue
        section: type[BaseModel] = Settings
        for part in e["loc"][:-1]:
            section = section.model_fields[str(part)].annotation  # type: ignore[assignment]
        close = _closest(str(e["loc"][-1]), section)
        prefix = ".".join(str(p) for p in e["loc"][:-1])
        hint = f"; did you mean `{prefix + '.' if prefix else ''}{close}`?" if close else ""
        problems.append(f"unknown setting `{key}`{hint}")
    return "; ".join(problems)
