/**
 * A WebSocket that reconnects by itself with a growing delay, for the events
 * stream and the worker consoles. No JupyterLab imports: the socket factory is
 * given, so tests drive it with a fake.
 */

export type SocketState = 'connecting' | 'open' | 'closed' | 'stopped';

/** The part of the browser's WebSocket this module uses. */
export interface ISocketLike {
  onopen: any;
  onmessage: any;
  onclose: any;
  onerror: any;
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface IReconnectingOptions {
  /** Opens a new socket (called on every attempt, so a fresh token or URL can be used). */
  open: () => ISocketLike;
  onOpen?: () => void;
  onMessage?: (data: string) => void;
  onStateChange?: (state: SocketState, attempt: number) => void;
  /** First retry delay in ms (doubles each failure up to maxDelay). */
  minDelay?: number;
  maxDelay?: number;
  /** Timer functions, replaceable in tests. */
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
}

const OPEN = 1;

/** Delay before retry number `attempt` (1-based): doubling from min to max. */
export function backoff(attempt: number, minDelay: number, maxDelay: number): number {
  return Math.min(maxDelay, minDelay * Math.pow(2, Math.max(0, attempt - 1)));
}

/** Keeps one WebSocket open, reopening it after it closes until `stop()` is called. */
export class ReconnectingSocket {
  constructor(options: IReconnectingOptions) {
    this._options = options;
    this._minDelay = options.minDelay ?? 500;
    this._maxDelay = options.maxDelay ?? 10000;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? (h => clearTimeout(h));
  }

  get state(): SocketState {
    return this._state;
  }

  /** How many connection attempts failed in a row. */
  get failures(): number {
    return this._failures;
  }

  /** Open the socket (again). */
  start(): void {
    if (this._state === 'stopped') {
      this._state = 'closed';
    }
    this._cancelRetry();
    this._connect();
  }

  /** Close for good: no more reconnects. */
  stop(): void {
    this._cancelRetry();
    this._setState('stopped');
    const sock = this._socket;
    this._socket = null;
    if (sock) {
      sock.onclose = null;
      sock.onmessage = null;
      sock.onerror = null;
      sock.onopen = null;
      try {
        sock.close();
      } catch {
        // already closed
      }
    }
  }

  /** Reconnect now instead of waiting for the next retry. */
  reconnectNow(): void {
    if (this._state === 'stopped' || this._state === 'open') {
      return;
    }
    this._cancelRetry();
    this._connect();
  }

  /** Send text if the socket is open; returns whether it was sent. */
  send(data: string): boolean {
    if (this._socket && this._socket.readyState === OPEN) {
      this._socket.send(data);
      return true;
    }
    return false;
  }

  private _connect(): void {
    const old = this._socket;
    if (old) {
      old.onclose = null;
      old.onmessage = null;
      old.onerror = null;
      old.onopen = null;
      try {
        old.close();
      } catch {
        // ignore
      }
    }
    this._setState('connecting');
    let sock: ISocketLike;
    try {
      sock = this._options.open();
    } catch (err) {
      this._socket = null;
      this._scheduleRetry();
      return;
    }
    this._socket = sock;
    sock.onopen = () => {
      this._failures = 0;
      this._setState('open');
      this._options.onOpen?.();
    };
    sock.onmessage = (ev: { data: unknown }) => {
      this._options.onMessage?.(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    sock.onerror = () => {
      // onclose follows and does the work.
    };
    sock.onclose = () => {
      if (this._socket !== sock) {
        return;
      }
      this._socket = null;
      this._scheduleRetry();
    };
  }

  private _scheduleRetry(): void {
    if (this._state === 'stopped') {
      return;
    }
    this._failures += 1;
    this._setState('closed');
    const delay = backoff(this._failures, this._minDelay, this._maxDelay);
    this._retry = this._setTimeout(() => {
      this._retry = null;
      if (this._state !== 'stopped') {
        this._connect();
      }
    }, delay);
  }

  private _cancelRetry(): void {
    if (this._retry !== null) {
      this._clearTimeout(this._retry);
      this._retry = null;
    }
  }

  private _setState(state: SocketState): void {
    this._state = state;
    this._options.onStateChange?.(state, this._failures);
  }

  private _options: IReconnectingOptions;
  private _minDelay: number;
  private _maxDelay: number;
  private _setTimeout: (fn: () => void, ms: number) => any;
  private _clearTimeout: (handle: any) => void;
  private _socket: ISocketLike | null = null;
  private _retry: any = null;
  private _state: SocketState = 'closed';
  private _failures = 0;
}
