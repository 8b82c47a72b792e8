"""LLM messages between the record's form and the two conventions' forms, both ways.

A record keeps messages OpenAI-style (`role`; `content` as text or parts; `tool_calls`, `tool_call_id`,
`finish_reason`, `reasoning_content`; Anthropic content blocks are read too). OTel GenAI writes them as
the JSON text of `gen_ai.{input,output}.messages` in parts form (`genai_messages`, read back by
`genai_messages_from`); OpenInference flattens them into `llm.{input,output}_messages.N.message.*`
attributes (`oi_message_attributes`, read back by `oi_messages_from`). `semconv`'s mappers use the first
of each pair, `decode` the second.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shipper.otlp.text import json_text, parse_json

__all__ = ["FINISH_REASONS", "genai_messages", "genai_messages_from", "genai_part", "oi_message_attributes",
           "oi_messages_from"]

FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}
"""OpenAI finish reasons → the GenAI schema's (stop, length, content_filter, tool_call, error); others kept."""
_MESSAGE_KEY = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")


# -- record → conventions ------------------------------------------------------------------------------


def _data_url(url: str) -> tuple[str | None, str] | None:
    """(mime type, base64 content) of a `data:<mime>;base64,<content>` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, _, content = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    return (mime or None, content) if encoding == "base64" else None


def _media_part(modality: str, url: str | None = None, data: str | None = None, mime: str | None = None,
                file_id: str | None = None) -> dict[str, Any]:
    """A GenAI `uri`, `blob` or `file` part (the schema's parts for non-text content)."""
    if url is not None:
        inline = _data_url(url)
        if inline is None:
            part: dict[str, Any] = {"type": "uri", "modality": modality, "uri": url}
        else:
            part = {"type": "blob", "modality": modality, "content": inline[1]}
            mime = mime or inline[0]
    elif data is not None:
        part = {"type": "blob", "modality": modality, "content": data}
    else:
        part = {"type": "file", "modality": modality, "file_id": file_id or ""}
    if mime:
        part["mime_type"] = mime
    return part


def genai_part(part: Any) -> dict[str, Any]:
    """One content part of a record message (OpenAI or Anthropic form) as a GenAI message part.

    Text becomes `text`; images, audio and files become `uri` (a URL), `blob` (inline base64, also
    from a data URL) or `file` (a provider file id); anything else is kept as a generic part.
    """
    if not isinstance(part, dict):
        return {"type": "text", "content": part if isinstance(part, str) else json_text(part)}
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "content": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _media_part("image", url=str(url or ""))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        fmt = audio.get("format")
        return _media_part("audio", data=str(audio.get("data", "")), mime=f"audio/{fmt}" if fmt else None)
    if kind == "file" and isinstance(part.get("file"), dict):
        file = part["file"]
        if file.get("file_data"):
            data = str(file["file_data"])
            return _media_part("document", url=data) if data.startswith("data:") else _media_part(
                "document", data=data)
        return _media_part("document", file_id=str(file.get("file_id") or ""))
    source = part.get("source")
    if kind in ("image", "document", "audio") and isinstance(source, dict):  # Anthropic content blocks
        modality = "document" if kind == "document" else kind
        if source.get("type") == "base64":
            return _media_part(modality, data=str(source.get("data", "")), mime=source.get("media_type"))
        if source.get("type") == "url":
            return _media_part(modality, url=str(source.get("url", "")))
        if source.get("type") == "file":
            return _media_part(modality, file_id=str(source.get("file_id", "")))
    if isinstance(kind, str) and kind:
        return dict(part)  # a GenericPart: any type, any properties
    return {"type": "generic", "content": part}


def genai_messages(messages: list[Any], output: bool = False, finish_reason: str = "stop") -> str:
    """Record messages as the JSON text of `gen_ai.input.messages` / `gen_ai.output.messages` (parts form).

    Output messages always carry `finish_reason` (the schema requires it): the message's own, in the
    schema's words, else `tool_call` for a message that calls tools, else `finish_reason` (`stop`, or
    `error` for a failed span).
    """
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            entry: dict[str, Any] = {"role": "assistant" if output else "user",
                                     "parts": [{"type": "text", "content": str(message)}]}
            if output:
                entry["finish_reason"] = finish_reason
            converted.append(entry)
            continue
        parts: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"type": "reasoning", "content": reasoning})
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "content": content})
        elif isinstance(content, list):
            parts.extend(genai_part(part) for part in content)
        elif content is not None:
            parts.append({"type": "text", "content": json_text(content)})
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call.get("function") or {}
                parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments")})
        entry = {"role": message.get("role", "assistant" if output else "user"), "parts": parts}
        if message.get("tool_call_id"):
            entry["parts"] = [{"type": "tool_call_response", "id": message["tool_call_id"],
                               "response": content}]
        if output:
            reason = message.get("finish_reason")
            if isinstance(reason, str) and reason:
                entry["finish_reason"] = FINISH_REASONS.get(reason, reason)
            else:
                entry["finish_reason"] = "tool_call" if message.get("tool_calls") and finish_reason == "stop" \
                    else finish_reason
        converted.append(entry)
    return json_text(converted)


def oi_message_attributes(prefix: str, messages: list[Any], out: dict[str, Any]) -> None:
    """Record messages as OpenInference's flattened `<prefix>.N.message.*` attributes, added to `out`."""
    for i, message in enumerate(messages):
        base = f"{prefix}.{i}.message"
        if not isinstance(message, dict):
            out[f"{base}.content"] = str(message)
            continue
        if message.get("role"):
            out[f"{base}.role"] = message["role"]
        content = message.get("content")
        if isinstance(content, str):
            out[f"{base}.content"] = content
        elif isinstance(content, list):
            for j, part in enumerate(content):
                where = f"{base}.contents.{j}.message_content"
                if isinstance(part, dict) and part.get("type") == "text":
                    out[f"{where}.type"] = "text"
                    out[f"{where}.text"] = part.get("text", "")
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url")
                    out[f"{where}.type"] = "image"
                    out[f"{where}.image.image.url"] = url.get("url", "") if isinstance(url, dict) else str(url)
                else:
                    out[f"{where}.type"] = "text"
                    out[f"{where}.text"] = json_text(part)
        elif content is not None:
            out[f"{base}.content"] = json_text(content)
        if message.get("name"):
            out[f"{base}.name"] = message["name"]
        if message.get("tool_call_id"):
            out[f"{base}.tool_call_id"] = message["tool_call_id"]
        for k, call in enumerate(message.get("tool_calls") or []):
            if not isinstance(call, dict):
                continue
            where = f"{base}.tool_calls.{k}.tool_call"
            function = call.get("function") or {}
            if call.get("id"):
                out[f"{where}.id"] = call["id"]
            if function.get("name"):
                out[f"{where}.function.name"] = function["name"]
            arguments = function.get("arguments")
            if arguments is not None:
                out[f"{where}.function.arguments"] = (
                    arguments if isinstance(arguments, str) else json_text(arguments))


# -- conventions → record ------------------------------------------------------------------------------


def oi_messages_from(attrs: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """OpenInference's flattened `llm.{input,output}_messages.N.message.*` back into message lists."""
    found: dict[str, dict[int, dict[str, Any]]] = {"input": {}, "output": {}}
    for key, value in attrs.items():
        if not key.startswith(("llm.input_messages.", "llm.output_messages.")):
            continue
        match = _MESSAGE_KEY.fullmatch(key)
        if match is None:
            continue
        side, index, rest = match.group(1), int(match.group(2)), match.group(3)
        message = found[side].setdefault(index, {})
        if rest in ("role", "content", "name", "tool_call_id"):
            message[rest] = value
        elif rest.startswith("contents."):
            j, _, what = rest[len("contents."):].partition(".message_content.")
            if j.isdigit():
                message.setdefault("_parts", {}).setdefault(int(j), {})[what] = value
        elif rest.startswith("tool_calls."):
            k, _, what = rest[len("tool_calls."):].partition(".tool_call.")
            if k.isdigit():
                message.setdefault("_calls", {}).setdefault(int(k), {})[what] = value
    out: dict[str, list[dict[str, Any]]] = {}
    for side, by_index in found.items():
        if not by_index:
            continue
        messages = []
        for index in sorted(by_index):
            message = by_index[index]
            parts = message.pop("_parts", None)
            calls = message.pop("_calls", None)
            message.setdefault("role", "user" if side == "input" else "assistant")
            if parts and "content" not in message:
                message["content"] = [_oi_part(parts[j]) for j in sorted(parts)]
            if calls:
                message["tool_calls"] = [
                    {"id": c.get("id"), "type": "function",
                     "function": {"name": c.get("function.name"), "arguments": c.get("function.arguments")}}
                    for c in (calls[k] for k in sorted(calls))]
            messages.append(message)
        out[side] = messages
    return out


def _oi_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image":
        return {"type": "image_url", "image_url": {"url": part.get("image.image.url", "")}}
    return {"type": "text", "text": part.get("text", "")}


def _media_content(part: Mapping[str, Any]) -> dict[str, Any]:
    """A GenAI `uri` / `blob` / `file` part as an OpenAI-style content part (images by URL or data URL)."""
    kind, modality, mime = part.get("type"), part.get("modality"), part.get("mime_type")
    if kind == "uri" and modality == "image":
        return {"type": "image_url", "image_url": {"url": str(part.get("uri", ""))}}
    if kind == "blob" and modality == "image":
        return {"type": "image_url",
                "image_url": {"url": f"data:{mime or 'application/octet-stream'};base64,{part.get('content', '')}"}}
    if kind == "blob" and modality == "audio" and isinstance(mime, str) and mime.startswith("audio/"):
        return {"type": "input_audio", "input_audio": {"data": str(part.get("content", "")), "format": mime[6:]}}
    if kind == "file":
        return {"type": "file", "file": {"file_id": str(part.get("file_id", ""))}}
    return dict(part)


def genai_messages_from(value: Any, output: bool) -> list[dict[str, Any]] | None:
    """`gen_ai.input.messages` / `gen_ai.output.messages` (parts form, JSON text) as record messages."""
    messages = parse_json(value)
    if not isinstance(messages, list):
        return None
    out = []
    for item in messages:
        if not isinstance(item, dict):
            continue
        message: dict[str, Any] = {"role": str(item.get("role") or ("assistant" if output else "user"))}
        texts: list[str] = []
        media: list[dict[str, Any]] = []
        calls = []
        for part in item.get("parts") or ():
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("content", "")))
            elif kind in ("uri", "blob", "file"):
                media.append(_media_content(part))
            elif kind == "reasoning" and isinstance(part.get("content"), str):
                message["reasoning_content"] = part["content"]
            elif kind == "tool_call":
                arguments = part.get("arguments")
                calls.append({"id": part.get("id"), "type": "function", "function": {
                    "name": part.get("name"),
                    "arguments": arguments if isinstance(arguments, str) or arguments is None
                    else json_text(arguments)}})
            elif kind == "tool_call_response":
                message["role"] = "tool"
                message["tool_call_id"] = part.get("id")
                response = part.get("response")
                texts.append(response if isinstance(response, str) else json_text(response))
        if media:
            message["content"] = [*({"type": "text", "text": t} for t in texts), *media]
        elif texts:
            message["content"] = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
        if calls:
            message["tool_calls"] = calls
        if output and item.get("finish_reason"):
            message["finish_reason"] = item["finish_reason"]
        out.append(message)
    return out
