"""The usual receiver: FastAPI, Tencent-sample-style crypto, xmltodict, a passive reply.

This is how a WeCom callback receiver is commonly written: typed query parameters validated by
FastAPI, ``DecryptMsg`` from a WXBizMsgCrypt-like class, ``xmltodict.parse`` of the message, and
an encrypted passive reply built by string concatenation and ``EncryptMsg``, all inside the
request. It is the baseline the ingress is measured against, not code to copy.
"""

from __future__ import annotations

import time

import xmltodict
from fastapi import FastAPI, HTTPException, Request, Response

from bench.tencent import WXBizMsgCryptLike
from shared.config import load_settings

__all__ = ["usual_app"]


def usual_app() -> FastAPI:
    settings = load_settings().app()
    assert settings.token is not None and settings.encoding_aes_key is not None
    wxcpt = WXBizMsgCryptLike(
        settings.token.get(), settings.encoding_aes_key.get(), settings.corp_id
    )
    app = FastAPI()

    @app.post("/callback")
    async def callback(
        request: Request, msg_signature: str, timestamp: str, nonce: str
    ) -> Response:
        body = await request.body()
        ret, xml = wxcpt.DecryptMsg(body.decode(), msg_signature, timestamp, nonce)
        if ret != 0:
            raise HTTPException(status_code=403, detail=f"DecryptMsg ret {ret}")
        msg = xmltodict.parse(xml)["xml"]
        reply = (
            "<xml><ToUserName><![CDATA["
            + msg["FromUserName"]
            + "]]></ToUserName><FromUserName><![CDATA["
            + msg["ToUserName"]
            + "]]></FromUserName><CreateTime>"
            + str(int(time.time()))
            + "</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA["
            + (msg.get("Content") or "")
            + "]]></Content></xml>"
        )
        ret, encrypted = wxcpt.EncryptMsg(reply, nonce, timestamp)
        if ret != 0:
            raise HTTPException(status_code=500, detail=f"EncryptMsg ret {ret}")
        return Response(content=encrypted, media_type="application/xml")

    return app
