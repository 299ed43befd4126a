"""A client-side bound on every wait for PostgreSQL's answer.

The server-side timeouts (statement_timeout, lock_timeout) are enforced by the server, so
a server that is frozen (SIGSTOPped, swapped out, a VM paused, a disk that no longer
answers) enforces none of them. TCP does not help either: the frozen server's kernel still
acknowledges every packet and every keepalive, so `tcp_user_timeout` and keepalives never
fire, and libpq itself has no timeout once connected (measured here: a ping to a SIGSTOPped
server returned when it was continued, 25 s later). psycopg 3 waits for the server in
Python (`Connection.wait`, which takes a timeout); `AnswerBoundConnection` gives every such
wait a deadline. Past it the connection is closed (half a reply read leaves it unusable)
and the call raises `psycopg.OperationalError`, which the store reports as unavailable
(the service answers 503).

SQLAlchemy's pool pre-ping would answer a closed connection with a reconnect, which a
frozen server makes wait its connect_timeout too; `no_reconnect_after_deadline` stops
that, so a request waits one deadline, not two.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors
from sqlalchemy import Engine, event

DEADLINE_MESSAGE = "the server did not answer within"
# psycopg's own "the wait's timeout expired" (an OperationalError subclass, private)
_WAIT_TIMEOUT: type[Exception] = getattr(errors, "_WaitTimeout", psycopg.OperationalError)


class AnswerBoundConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends after `answer_s`."""

    answer_s: float = 6.0

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = self.answer_s if timeout is None else min(timeout, self.answer_s)
        try:
            return super().wait(gen, interval=interval, timeout=bound)
        except _WAIT_TIMEOUT as err:
            if timeout is not None and timeout < self.answer_s:
                raise  # the caller's own, shorter timeout (notifies): theirs to handle
            self.pgconn.finish()  # closed, not reusable: a half-read reply is lost
            raise psycopg.OperationalError(
                f"{DEADLINE_MESSAGE} {self.answer_s:g} s (frozen or unreachable): connection closed"
            ) from err


def bound_answers(engine: Engine, answer_s: float) -> None:
    """Make `engine` (postgresql+psycopg) open AnswerBoundConnections with `answer_s`."""

    class Bounded(AnswerBoundConnection):
        pass

    Bounded.answer_s = float(answer_s)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return Bounded.connect(*cargs, **cparams)

    @event.listens_for(engine, "handle_error")
    def _no_reconnect_after_deadline(context: Any) -> None:
        # a pre-ping that ran past the deadline: the server is frozen, not restarted, so
        # a new connection would only wait connect_timeout more; fail the checkout now
        if context.is_pre_ping and DEADLINE_MESSAGE in str(context.original_exception):
            context.is_disconnect = False
