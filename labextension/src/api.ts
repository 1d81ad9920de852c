/**
 * The REST and WebSocket client of `/api/mas`, through Lab's ServerConnection so
 * authentication, XSRF and the base URL are handled like Lab's own services.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ISession, IWorker } from './model';

export const API_PATH = 'api/mas';

export interface IBackend {
  name: string;
  description?: string;
  kind?: string;
  available: boolean;
  reason?: string | null;
}

export interface IPersona {
  name: string;
  icon?: string | null;
  title?: string | null;
}

export interface ITemplate {
  name: string;
}

export interface IWorkerSpec {
  /** Left out, the server names it: the backend's name (or "shell"), else the next free `demo-2`, ... */
  name?: string;
  kind: 'agent' | 'terminal';
  backend?: string;
  persona?: string;
  cols?: number;
  rows?: number;
}

export interface ISessionSpec {
  name?: string;
  kind: 'quick' | 'worktree' | 'dir';
  template?: string;
  repo?: string;
  branch?: string;
  base?: string;
  path?: string;
  task?: string;
  workers?: IWorkerSpec[];
}

/** An error answered by the server, with its words and machine-readable reason. */
export class MasApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string | null,
    readonly body: Record<string, any>
  ) {
    super(message);
    this.name = 'MasApiError';
  }

  /** The stop check's blocking problems (on a 409 `stop_refused`). */
  get errors(): string[] {
    return Array.isArray(this.body.errors) ? this.body.errors.map(String) : [];
  }

  /** The stop check's warnings (on a 409 `stop_refused`). */
  get warnings(): string[] {
    return Array.isArray(this.body.warnings) ? this.body.warnings.map(String) : [];
  }
}

/** The request field a refusal was about (its `field`), if `labels` has words for it. */
export function refusedField(err: unknown, labels: Record<string, string>): string | null {
  const field = err instanceof MasApiError ? err.body.field : null;
  return typeof field === 'string' && Object.prototype.hasOwnProperty.call(labels, field)
    ? field
    : null;
}

/**
 * Turn whatever failed (network, server, body) into a sentence for the user. A refusal about
 * one field of the request (its `field`) names the field as the REST API does (`'repo'`);
 * `labels` gives the words the dialog shows for it instead (`“Repository”`).
 */
export function describeError(err: unknown, labels: Record<string, string> = {}): string {
  if (err instanceof MasApiError) {
    if (err.status >= 500) {
      return `${err.message} (the server failed with ${err.status}; its log has the details)`;
    }
    const field = refusedField(err, labels);
    return field ? err.message.split(`'${field}'`).join(`“${labels[field]}”`) : err.message;
  }
  if (err instanceof ServerConnection.NetworkError) {
    return 'The Jupyter server cannot be reached. Check that it is running, then try again.';
  }
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}

/** The client the panel, dialogs and consoles use. */
export class MasClient {
  constructor(settings?: ServerConnection.ISettings) {
    this.settings = settings ?? ServerConnection.makeSettings();
  }

  readonly settings: ServerConnection.ISettings;

  listSessions(): Promise<ISession[]> {
    return this._request('GET', 'sessions');
  }

  getSession(sid: string): Promise<ISession> {
    return this._request('GET', `sessions/${enc(sid)}`);
  }

  createSession(spec: ISessionSpec): Promise<ISession> {
    return this._request('POST', 'sessions', spec);
  }

  updateSession(sid: string, patch: { name?: string; task?: string | null }): Promise<ISession> {
    return this._request('PATCH', `sessions/${enc(sid)}`, patch);
  }

  /**
   * Delete; rejects with a MasApiError (status 409, field `force`) when a purge needs `force`.
   * Resolves to the rescue ref a forced purge saved the worktree's changes on, if any.
   */
  async deleteSession(sid: string, purge: boolean, force = false): Promise<string | null> {
    let rescue: string | null = null;
    await this._request<void>(
      'DELETE',
      `sessions/${enc(sid)}?purge=${purge}&force=${force}`,
      undefined,
      response => (rescue = response.headers.get('X-MAS-Rescue-Ref'))
    );
    return rescue;
  }

  pauseSession(sid: string): Promise<ISession> {
    return this._request('POST', `sessions/${enc(sid)}/pause`, {});
  }

  resumeSession(sid: string): Promise<ISession> {
    return this._request('POST', `sessions/${enc(sid)}/resume`, {});
  }

  /** Stop; rejects with a MasApiError (status 409, reason `stop_refused`) when checks fail. */
  stopSession(sid: string, force = false): Promise<ISession> {
    return this._request('POST', `sessions/${enc(sid)}/stop`, { force });
  }

  addWorker(sid: string, spec: IWorkerSpec): Promise<IWorker> {
    return this._request('POST', `sessions/${enc(sid)}/workers`, spec);
  }

  removeWorker(sid: string, wid: string): Promise<void> {
    return this._request('DELETE', `sessions/${enc(sid)}/workers/${enc(wid)}`);
  }

  restartWorker(sid: string, wid: string): Promise<IWorker> {
    return this._request('POST', `sessions/${enc(sid)}/workers/${enc(wid)}/restart`, {});
  }

  backends(): Promise<IBackend[]> {
    return this._request('GET', 'backends');
  }

  personas(): Promise<IPersona[]> {
    return this._request('GET', 'personas');
  }

  templates(): Promise<ITemplate[]> {
    return this._request('GET', 'templates');
  }

  /** A WebSocket URL under `/api/mas`, with the token when the settings say so. */
  wsUrl(path: string): string {
    let url = URLExt.join(this.settings.wsUrl, API_PATH, path);
    const token = this.settings.token;
    if (this.settings.appendToken && token) {
      url += `?token=${encodeURIComponent(token)}`;
    }
    return url;
  }

  /** Open a WebSocket under `/api/mas` the way Lab's terminals do. */
  openSocket(path: string): WebSocket {
    return new this.settings.WebSocket(this.wsUrl(path));
  }

  private async _request<T>(
    method: string,
    path: string,
    body?: unknown,
    answered?: (response: Response) => void
  ): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, API_PATH, path);
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    const response = await ServerConnection.makeRequest(url, init, this.settings);
    if (response.status === 204) {
      answered?.(response);
      return undefined as T;
    }
    const text = await response.text();
    let data: any = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const info = data && typeof data === 'object' ? data : {};
      if (!data && response.status === 404) {
        // Tornado's own HTML 404: the route itself is missing, not a session.
        const message =
          'The mas_jupyter server extension does not answer at /api/mas. ' +
          'Check that it is installed and enabled (`jupyter server extension list`), ' +
          'then restart the Jupyter server.';
        throw new MasApiError(message, 404, 'extension_missing', {});
      }
      const message =
        info.message ||
        `The server answered ${response.status} ${response.statusText || ''}`.trim() +
          ` to ${method} ${path}.`;
      throw new MasApiError(message, response.status, info.reason ?? null, info);
    }
    answered?.(response);
    return data as T;
  }
}

function enc(part: string): string {
  return encodeURIComponent(part);
}
