/** Fake sockets and timers for the connection tests. */

import { ISocketLike } from '../src/socket';

export class FakeSocket implements ISocketLike {
  onopen: any = null;
  onmessage: any = null;
  onclose: any = null;
  onerror: any = null;
  readyState = 0;
  sent: string[] = [];
  closed = false;

  send(data: string): void {
    this.sent.push(data);
  }

  close(): void {
    this.closed = true;
    this.readyState = 3;
  }

  /** The server accepts the connection. */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** The server sends a message. */
  receive(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }

  /** The connection drops. */
  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

export class FakeTimers {
  private _now = 0;
  private _next = 1;
  private _pending = new Map<number, { at: number; fn: () => void }>();

  setTimeout = (fn: () => void, ms: number): number => {
    const id = this._next++;
    this._pending.set(id, { at: this._now + ms, fn });
    return id;
  };

  clearTimeout = (id: number): void => {
    this._pending.delete(id);
  };

  get pending(): number[] {
    return [...this._pending.values()].map(p => p.at - this._now);
  }

  /** Move time forward, running what falls due. */
  advance(ms: number): void {
    const until = this._now + ms;
    for (;;) {
      const due = [...this._pending.entries()].filter(([, p]) => p.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) {
        break;
      }
      this._pending.delete(due[0]);
      this._now = due[1].at;
      due[1].fn();
    }
    this._now = until;
  }
}
