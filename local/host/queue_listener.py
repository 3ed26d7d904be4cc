"""Queue triggers with the storage extension's semantics.

Poll with exponential backoff up to maxPollingInterval; take up to batchSize messages and fetch
more once no more than newBatchThreshold are running; keep a running message invisible (a lease
renewed at half its length); delete on success; on failure make it visible again after
visibilityTimeout, or on the maxDequeueCount-th try copy it to `<queue>-poison` and delete it.
A message that is not valid base64 (with the base64 encoding) goes straight to poison.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage

from .app_loader import FunctionSpec
from .bindings import out_values
from .host_config import QueueOptions
from .invoker import Invoker
from .storage import QueueClients, QueueOutputWriter

log = logging.getLogger("host")
MIN_POLL = 0.1  # the SDK's minimum backoff


class QueueListener:
    def __init__(
        self,
        spec: FunctionSpec,
        options: QueueOptions,
        clients: QueueClients,
        invoker: Invoker,
        writer: QueueOutputWriter,
        lease_seconds: float,
    ):
        self.spec, self.options, self.clients = spec, options, clients
        self.invoker, self.writer = invoker, writer
        self.queue_name = spec.trigger["queueName"]
        self.connection = spec.trigger.get("connection") or "AzureWebJobsStorage"
        self.lease = max(1, round(lease_seconds))  # the service takes whole seconds
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()

    def notify(self) -> None:
        """A message was just written to our queue by this host: poll now (as the real host does)."""
        self._wake.set()

    async def run(self) -> None:
        opts = self.options
        delay = MIN_POLL
        while True:  # storage may still be starting: keep trying, as the host does
            try:
                self.queue = await self.clients.get(self.connection, self.queue_name)
                self.poison = await self.clients.get(self.connection, self.queue_name + "-poison")
                break
            except Exception as exc:
                log.warning("queue %s: storage not reachable yet: %s", self.queue_name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, opts.max_polling_interval)
        delay = MIN_POLL
        try:
            while True:
                if len(self._running) > opts.new_batch_threshold:
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = [
                        m
                        async for m in self.queue.receive_messages(
                            messages_per_page=opts.batch_size,
                            max_messages=opts.batch_size,
                            visibility_timeout=self.lease,
                        )
                    ]
                except Exception as exc:  # storage down: keep polling, as the host does
                    log.warning("queue %s: receive failed: %s", self.queue_name, exc)
                    messages = []
                if messages:
                    delay = MIN_POLL
                    for m in messages:
                        task = asyncio.create_task(self._process(m))
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay * random.uniform(0.8, 1.0))
                    delay = MIN_POLL
                except TimeoutError:
                    delay = min(delay * 2, opts.max_polling_interval)
        finally:
            running = list(self._running)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)  # lets them release their messages

    async def _process(self, m) -> None:
        try:
            await self._process_one(m)
        except Exception:
            log.exception("queue %s: message %s could not be settled", self.queue_name, m.id)

    async def _process_one(self, m) -> None:
        opts = self.options
        if m.dequeue_count > opts.max_dequeue_count:  # e.g. the host died during earlier tries
            await self._to_poison(m, "it has already been dequeued too often")
            return
        if opts.message_encoding == "base64":
            try:
                body = base64.b64decode(m.content, validate=True)
            except (binascii.Error, ValueError):
                await self._to_poison(m, "its content is not valid base64 (messageEncoding is base64)")
                return
        else:
            body = m.content.encode("utf-8")
        receipt = {"pop": m.pop_receipt}
        renew = asyncio.create_task(self._keep_invisible(m, receipt))
        try:
            ok = await self._invoke(m, body, receipt["pop"])
        except asyncio.CancelledError:
            # The host is stopping: make the message visible again now rather than after the lease.
            renew.cancel()
            try:
                await asyncio.wait_for(self.queue.update_message(m.id, receipt["pop"], visibility_timeout=0), 5)
            except Exception:
                pass
            raise
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
        try:
            if ok:
                await self.queue.delete_message(m.id, receipt["pop"])
            elif m.dequeue_count >= opts.max_dequeue_count:
                await self._to_poison(m, f"it has reached MaxDequeueCount of {opts.max_dequeue_count}", receipt["pop"])
            else:
                await self.queue.update_message(m.id, receipt["pop"], visibility_timeout=int(opts.visibility_timeout))
        except ResourceNotFoundError:
            log.warning("queue %s: message %s was gone (its lease ran out?)", self.queue_name, m.id)

    async def _invoke(self, m, body: bytes, pop_receipt: str) -> bool:
        msg = QueueMessage(
            id=m.id,
            body=body,
            dequeue_count=m.dequeue_count,
            insertion_time=m.inserted_on,
            expiration_time=m.expires_on,
            time_next_visible=m.next_visible_on,
            pop_receipt=pop_receipt,
        )
        trigger = self.spec.trigger["name"]
        annotation = self.spec.params[trigger].annotation if trigger in self.spec.params else None
        value: QueueMessage | str | bytes = msg
        if annotation is str:
            value = body.decode("utf-8")
        elif annotation is bytes:
            value = body
        outs = out_values(self.spec)
        try:
            returned = await self.invoker.invoke(
                self.spec, {trigger: value, **outs}, f"New queue message detected on '{self.queue_name}'."
            )
            await self.writer.write_outputs(self.spec, returned, outs)
            return True
        except Exception:
            return False

    async def _keep_invisible(self, m, receipt: dict) -> None:
        """Renew the lease at half its length so a long run keeps its message hidden."""
        while True:
            await asyncio.sleep(self.lease / 2)
            try:
                updated = await self.queue.update_message(m.id, receipt["pop"], visibility_timeout=self.lease)
                receipt["pop"] = updated.pop_receipt
            except Exception as exc:
                log.warning("queue %s: could not renew message %s: %s", self.queue_name, m.id, exc)

    async def _to_poison(self, m, why: str, pop_receipt: str | None = None) -> None:
        log.warning(
            "Message %s on queue '%s' is moved to '%s-poison': %s.", m.id, self.queue_name, self.queue_name, why
        )
        await self.poison.send_message(m.content)  # the original text, as the host copies it
        await self.queue.delete_message(m.id, pop_receipt or m.pop_receipt)
