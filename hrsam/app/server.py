"""The app's HTTP server (FastAPI): lists models and images by id, encodes an image once per model
(a bounded cache of embeddings), and answers each click with the mask, the IoU against the
ground truth when the image has one, and the encoder and decoder times.

Every prediction is `replay`: the same `hrsam.models.Predictor` and click encoding as the
interactive evaluation (all clicks so far, the previous step's low-resolution logits fed back),
so a click sequence replayed offline gives the same mask. Bad input is a 4xx answer whose
``detail`` is one line; the server keeps serving. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from hrsam import names
from hrsam.app.models import ImageEntry, ModelEntry, describe, load
from hrsam.interactive.metrics import iou
from hrsam.models import Predictor

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_CLICKS = 50
STATIC = Path(__file__).parent / "static"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClickIn(_Strict):
    """One click in image pixels (the top-left pixel is 0, 0)."""

    x: float = Field(ge=0, strict=True, description="column, px")
    y: float = Field(ge=0, strict=True, description="row, px")
    positive: StrictBool = Field(description="true: on the object; false: on the background")


class PredictIn(_Strict):
    """Every click so far on one image: the answer replays them as the evaluation does."""

    model: str = Field(description="a model id from /api/models")
    image: str = Field(description="an image id from /api/images or an upload")
    clicks: list[ClickIn] = Field(description=f"in order, at most {MAX_CLICKS}")
    mask_format: Literal["png", "runs"] = Field(
        "png",
        description="png: the mask as a PNG (base64) in `mask`; runs: its run lengths in "
        "`mask_runs` (no PNG to encode and decode: the page's format)",
    )


class PredictOut(BaseModel):
    mask: str | None = Field(
        description="the mask after the last click: a PNG, base64 (null with mask_format=runs)"
    )
    mask_runs: list[int] | None = Field(
        None,
        description="with mask_format=runs: the mask's run lengths in row-major order, "
        "alternating, the first a run of background (0 when the first pixel is the object)",
    )
    iou: float | None = Field(description="against the ground truth, when the image has one")
    encoder_ms: float = Field(description="0 when the image was encoded before")
    decoder_ms: float
    decoder_steps: int = Field(description="clicks decoded for this answer (earlier ones cached)")
    device: str
    precision: str
    ts: int = Field(description="the model's target size, px")


class ModelOut(BaseModel):
    id: str
    label: str
    ts: int
    dataset: str | None = Field(None, description="the data a trial was evaluated on")


class ImageOut(BaseModel):
    id: str
    name: str
    width: int
    height: int
    has_gt: bool
    dataset: str = Field("", description="the validation data it comes from; empty: an upload")


class BadRequestError(ValueError):
    """A request the app refuses: (HTTP status, one-line message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def replay(predictor: Predictor, clicks, prev=None, start: int = 0):
    """Clicks ``start+1 .. n`` as the evaluation runs them (`hrsam.interactive.evaluate`): step
    k decodes the first k clicks with step k-1's low-resolution logits. Returns (logits of the
    last step at full resolution, its low-resolution logits)."""
    pts = np.array([[c[0], c[1]] for c in clicks], np.float64)
    labels = np.array([int(c[2]) for c in clicks])
    logits = None
    for k in range(start + 1, len(clicks) + 1):
        logits, prev = predictor.predict(pts[:k], labels[:k], prev)
    return logits, prev


@dataclass
class _Encoded:
    predictor: Predictor
    encoder_ms: float
    steps: OrderedDict  # tuple(clicks) -> low-resolution logits after them


class Engine:
    """Models loaded on first use, embeddings cached per (model, image) (at most
    ``cache_size``), click prefixes cached per embedding so each new click is one decoder step."""

    def __init__(self, models: list[ModelEntry], images: list[ImageEntry], upload_dir: Path,
                 cache_size: int = 8) -> None:  # fmt: skip
        self.models = {m.id: m for m in models}
        self.images = {i.id: i for i in images}
        self.upload_dir = upload_dir
        self.loaded: dict[str, torch.nn.Module] = {}
        self.cache: OrderedDict[tuple[str, str], _Encoded] = OrderedDict()
        self.cache_size = cache_size
        self.uploads = 0

    def model(self, model_id: str) -> tuple[ModelEntry, torch.nn.Module]:
        if model_id not in self.models:
            raise BadRequestError(
                404, f"unknown model {model_id!r}; models: {', '.join(self.models)}"
            )
        if model_id not in self.loaded:
            self.loaded[model_id] = load(self.models[model_id])
        return self.models[model_id], self.loaded[model_id]

    def image(self, image_id: str) -> ImageEntry:
        if image_id not in self.images:
            raise BadRequestError(404, f"unknown image {image_id!r}; list them at /api/images")
        return self.images[image_id]

    def upload(self, data: bytes, name: str) -> ImageEntry:
        """An uploaded image, checked (bytes, decodable, pixels), kept in memory and as a PNG in
        the app's temporary folder."""
        if not data:
            raise BadRequestError(400, "empty upload: send the image file's bytes")
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequestError(
                413, f"upload of {len(data)} bytes exceeds {MAX_UPLOAD_BYTES} bytes"
            )
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise BadRequestError(
                        413, f"image of {im.width}x{im.height} px exceeds {MAX_UPLOAD_PIXELS} px"
                    )
                rgb = np.asarray(im.convert("RGB"))
        except BadRequestError:
            raise
        except Exception as e:
            raise BadRequestError(
                400, f"upload {name!r} is not a readable image ({type(e).__name__})"
            ) from None
        self.uploads += 1
        entry = ImageEntry(f"upload-{self.uploads}", Path(name).name or "upload", rgb, None)
        Image.fromarray(rgb).save(self.upload_dir / f"{entry.id}.png")
        self.images[entry.id] = entry
        return entry

    def predict(self, model_id: str, image_id: str, clicks: list, mask_format: str = "png") -> dict:
        entry, model = self.model(model_id)
        image = self.image(image_id)
        h, w = image.image.shape[:2]
        if not clicks:
            raise BadRequestError(400, "no clicks: send at least one {x, y, positive}")
        if len(clicks) > MAX_CLICKS:
            raise BadRequestError(
                400, f"{len(clicks)} clicks exceed the {MAX_CLICKS} the app takes"
            )
        for c in clicks:
            if not (0 <= c[0] < h and 0 <= c[1] < w):
                raise BadRequestError(
                    400, f"click at x={c[1]}, y={c[0]} is outside the {w}x{h} image"
                )
        enc = self._encoded(entry, model, image)
        key = tuple(clicks)
        start, prev = 0, None
        for k in range(len(key) - 1, 0, -1):  # the longest prefix decoded before
            if key[:k] in enc.steps:
                start, prev = k, enc.steps[key[:k]]
                break
        t0 = time.perf_counter()
        with torch.no_grad():
            logits, low = replay(enc.predictor, list(key), prev, start)
        decoder_ms = (time.perf_counter() - t0) * 1e3
        enc.steps[key] = low
        while len(enc.steps) > 256:
            enc.steps.popitem(last=False)
        mask = logits[0].float().cpu().numpy() > 0
        return {
            "mask": _png_base64(mask) if mask_format == "png" else None,
            "mask_runs": runs(mask) if mask_format == "runs" else None,
            "iou": None if image.gt is None else iou(mask, image.gt),
            names.ENCODER_MS: enc.encoder_ms,
            names.DECODER_MS: decoder_ms,
            "decoder_steps": len(key) - start,
            "device": str(enc.predictor.device),
            "precision": "fp32",
            "ts": entry.ts,
        }

    def _encoded(self, entry: ModelEntry, model, image: ImageEntry) -> _Encoded:
        key = (entry.id, image.id)
        if key in self.cache:
            self.cache.move_to_end(key)
            enc = self.cache[key]
            enc.encoder_ms = 0.0  # encoded before: this click cost no encoder pass
            return enc
        predictor = Predictor(model, entry.ts)
        t0 = time.perf_counter()
        predictor.set_image(image.image)
        enc = _Encoded(predictor, (time.perf_counter() - t0) * 1e3, OrderedDict())
        self.cache[key] = enc
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return enc


def runs(mask: np.ndarray) -> list[int]:
    """The run lengths of a boolean mask in row-major order, alternating background and object
    and starting with background (a first run of 0 when the first pixel is the object)."""
    flat = mask.ravel()
    if not flat.size:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size])))
    return ([0] if flat[0] else []) + counts.tolist()


def _png_base64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    # zlib level 1: 6 ms for a 1024 px mask against 9.4 ms at the default 6 (14 KB against 7 KB)
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def create_app(engine: Engine):
    """The FastAPI application over ``engine``."""
    app = FastAPI(title="hrsam-bench: try a model", redoc_url=None)  # OpenAPI page: /docs

    @app.exception_handler(BadRequestError)
    async def bad_request(_, e: BadRequestError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        return JSONResponse({"detail": validation_line(e)}, status_code=validation_status(e))

    @app.get("/", response_class=HTMLResponse)
    def index():
        return (STATIC / "index.html").read_text()

    @app.get("/api/models", response_model=list[ModelOut])
    def models():
        return [_model_out(m) for m in engine.models.values()]

    @app.get("/api/images", response_model=list[ImageOut])
    def images():
        return [_image_out(i) for i in engine.images.values()]

    @app.get("/api/images/{image_id}")
    def image(image_id: str):
        return Response(_png(engine.image(image_id).image), media_type="image/png")

    @app.get("/api/images/{image_id}/gt")
    def gt(image_id: str):
        entry = engine.image(image_id)
        if entry.gt is None:
            raise BadRequestError(404, f"image {image_id!r} has no ground truth (an upload)")
        return Response(_png(entry.gt.astype(np.uint8) * 255), media_type="image/png")

    @app.post("/api/upload", response_model=ImageOut)
    async def upload(request: Request):
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_UPLOAD_BYTES:
            raise BadRequestError(413, f"upload of {length} bytes exceeds {MAX_UPLOAD_BYTES} bytes")
        data = await request.body()
        return _image_out(engine.upload(data, request.headers.get("x-filename", "upload")))

    # in the event loop, not FastAPI's thread pool: one prediction at a time (an engine's models
    # and decoded steps are not shared across threads) and no thread hop per click
    @app.post("/api/predict", response_model=PredictOut)
    async def predict(body: PredictIn):
        clicks = [(math.floor(c.y), math.floor(c.x), c.positive) for c in body.clicks]  # pixels
        return engine.predict(body.model, body.image, clicks, body.mask_format)

    return app


def _model_out(m: ModelEntry) -> ModelOut:
    data = describe(m.data) if m.data is not None else None
    return ModelOut(id=m.id, label=m.label, ts=m.ts, dataset=data)


def _image_out(i: ImageEntry) -> ImageOut:
    h, w = i.image.shape[:2]
    return ImageOut(
        id=i.id, name=i.name, width=int(w), height=int(h), has_gt=i.gt is not None,
        dataset=i.dataset,
    )  # fmt: skip


SHAPE = '{"model": id, "image": id, "clicks": [{"x", "y", "positive"}]}'


def _not_json(err: dict) -> bool:
    """A body that is not a JSON object at all (unparsable, or sent as bytes or a string)."""
    whole = tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes | str)
    return err.get("type") == "json_invalid" or whole


def validation_status(e: RequestValidationError) -> int:
    """400 for a body that is not JSON at all, 422 for JSON that does not fit the model."""
    return 400 if any(_not_json(err) for err in e.errors()) else 422


def validation_line(e: RequestValidationError) -> str:
    """FastAPI's validation errors as one line, naming the first bad field and the value sent:
    ``clicks.0.positive: Input should be a valid boolean (got 'false')``."""
    errors = e.errors()
    if not errors:
        return f"send JSON {SHAPE}"
    err = errors[0]
    if _not_json(err):
        return f"send JSON {SHAPE}: the body is not a JSON object"
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    sent = err.get("input")
    got = f" (got {sent!r})" if "input" in err and not isinstance(sent, dict | list) else ""
    more = f"; {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{where}: {err.get('msg', 'invalid')}{got}{more}; send {SHAPE}".replace("\n", " ")
