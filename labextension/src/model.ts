/**
 * The panel's model of sessions: a snapshot from `GET /sessions` kept current by
 * the events of `/api/mas/events`. Pure logic, no DOM and no JupyterLab, so it is
 * unit-tested directly.
 */

export type SessionKind = 'quick' | 'worktree' | 'dir';
export type SessionStatus = 'active' | 'paused' | 'stopped';
export type WorkerStatus = 'starting' | 'running' | 'exited';
export type Activity = 'busy' | 'idle' | 'waiting' | 'unknown';

/** A worker as the server shows it. */
export interface IWorker {
  id: string;
  session_id: string;
  name: string;
  kind: 'agent' | 'terminal';
  backend: string;
  persona: string | null;
  persona_icon?: string | null;
  runtime: string;
  status: WorkerStatus;
  exit_code: number | null;
  exit_signal?: number | null;
  exit_reason?: string | null;
  activity: Activity;
  cols?: number;
  rows?: number;
  created_at: string;
  updated_at: string;
}

/** A session as the server shows it, with its workers. */
export interface ISession {
  id: string;
  name: string;
  kind: SessionKind;
  status: SessionStatus;
  task: string | null;
  workspace: string;
  workspace_path?: string | null;
  template?: string | null;
  repo?: string | null;
  branch?: string | null;
  base?: string | null;
  created_at: string;
  updated_at: string;
  active_seconds?: number;
  workers: IWorker[];
}

export type EventType =
  | 'session-created'
  | 'session-updated'
  | 'session-stopped'
  | 'session-deleted'
  | 'worker-created'
  | 'worker-exited'
  | 'worker-deleted'
  | 'activity-changed';

/** One message of the events WebSocket. */
export interface IMasEvent {
  type: EventType | string;
  session_id: string;
  worker_id?: string | null;
  time?: string;
  session?: ISession;
  worker?: IWorker;
  activity?: Activity | string;
}

/** A worker that has just started asking the user something. */
export interface IAttention {
  session: ISession;
  worker: IWorker;
}

/** What applying events or a snapshot changed. */
export interface IChange {
  /** Sessions whose row must be drawn again. */
  changed: Set<string>;
  /** Sessions were added or removed, or moved between groups or positions. */
  structural: boolean;
  /** Workers that went into `waiting` with this change. */
  attention: IAttention[];
  /** An event referred to something unknown: a fresh snapshot is needed. */
  needsRefresh: boolean;
}

/**
 * How a worker's process was ended for it, in words, by its exit_reason: a pause, a stop or
 * a restart ends the process with SIGHUP, which as a code (-1, signal 1) would read as a crash.
 */
const ENDED_FOR_IT: Record<string, string> = {
  paused: 'paused',
  stopped: 'stopped',
  restarted: 'restarting',
  deleted: 'removed',
  'server stopped': 'ended with the server',
  interrupted: 'ended with the server'
};

/** Human text for how a worker ended: the reason in words, else its code or signal. */
export function exitText(w: Pick<IWorker, 'exit_code' | 'exit_signal' | 'exit_reason'>): string {
  const reason = w.exit_reason ? ENDED_FOR_IT[w.exit_reason] : undefined;
  if (reason) {
    return reason;
  }
  if (w.exit_signal) {
    return `exited (signal ${w.exit_signal})`;
  }
  if (w.exit_code !== null && w.exit_code !== undefined) {
    return `exited (${w.exit_code})`;
  }
  return 'exited';
}

/** Sessions with the same task, as the panel shows them. */
export interface IGroup {
  /** The task, or null for sessions without one. */
  task: string | null;
  sessions: ISession[];
}

const STATUS_ORDER: Record<string, number> = { active: 0, paused: 1, stopped: 2 };

function emptyChange(): IChange {
  return { changed: new Set(), structural: false, attention: [], needsRefresh: false };
}

function merge(into: IChange, from: IChange): void {
  from.changed.forEach(id => into.changed.add(id));
  into.structural = into.structural || from.structural;
  into.attention.push(...from.attention);
  into.needsRefresh = into.needsRefresh || from.needsRefresh;
}

/** Where a session sorts: by status (active first), then newest first, then name. */
function sortKey(s: ISession): [number, string, string] {
  return [STATUS_ORDER[s.status] ?? 3, s.created_at || '', s.name];
}

/** Compare two sessions for the panel's order. */
export function compareSessions(a: ISession, b: ISession): number {
  const [sa, ca, na] = sortKey(a);
  const [sb, cb, nb] = sortKey(b);
  if (sa !== sb) {
    return sa - sb;
  }
  if (ca !== cb) {
    return ca < cb ? 1 : -1;
  }
  return na < nb ? -1 : na > nb ? 1 : 0;
}

function isWaiting(w: IWorker | undefined): boolean {
  return !!w && w.status !== 'exited' && w.activity === 'waiting';
}

/** Fill fields a server may leave out, so the view never reads `undefined`. */
function normalizeWorker(w: IWorker): IWorker {
  return { ...w, activity: (w.activity as Activity) || 'unknown' };
}

function normalizeSession(s: ISession): ISession {
  return { ...s, task: s.task || null, workers: (s.workers || []).map(normalizeWorker) };
}

/** The sessions and workers the panel shows, kept current by events. */
export class SessionsModel {
  private _sessions = new Map<string, ISession>();
  private _loaded = false;

  /** Whether a snapshot has been loaded. */
  get loaded(): boolean {
    return this._loaded;
  }

  /** Every session, in no particular order. */
  get sessions(): ISession[] {
    return Array.from(this._sessions.values());
  }

  get size(): number {
    return this._sessions.size;
  }

  /** One session by id, or by name as the REST API also accepts. */
  get(idOrName: string): ISession | undefined {
    const byId = this._sessions.get(idOrName);
    if (byId) {
      return byId;
    }
    for (const s of this._sessions.values()) {
      if (s.name === idOrName) {
        return s;
      }
    }
    return undefined;
  }

  /** One worker of a session by id or name. */
  worker(sessionId: string, workerId: string): IWorker | undefined {
    const s = this.get(sessionId);
    return s?.workers.find(w => w.id === workerId || w.name === workerId);
  }

  /** Replace everything with a fresh snapshot from `GET /sessions`. */
  reset(list: ISession[]): IChange {
    const change = emptyChange();
    const before = this._sessions;
    this._sessions = new Map();
    for (const raw of list) {
      const s = normalizeSession(raw);
      this._sessions.set(s.id, s);
      const old = before.get(s.id);
      // A periodic refresh redraws only the rows that differ from what is shown.
      if (!old || JSON.stringify(old) !== JSON.stringify(s)) {
        change.changed.add(s.id);
      }
      if (this._loaded) {
        this._collectAttention(old, s, change);
      }
    }
    for (const id of before.keys()) {
      if (!this._sessions.has(id)) {
        change.changed.add(id);
      }
    }
    change.structural = true;
    this._loaded = true;
    return change;
  }

  /** Apply one event from the events WebSocket. */
  apply(event: IMasEvent): IChange {
    const change = emptyChange();
    const sid = event.session_id;
    switch (event.type) {
      case 'session-created':
      case 'session-updated':
      case 'session-stopped': {
        if (!event.session) {
          change.needsRefresh = true;
          break;
        }
        this._upsertSession(normalizeSession(event.session), change);
        break;
      }
      case 'session-deleted': {
        if (this._sessions.delete(sid)) {
          change.structural = true;
          change.changed.add(sid);
        }
        break;
      }
      case 'worker-created':
      case 'worker-exited': {
        if (!event.worker) {
          change.needsRefresh = true;
          break;
        }
        this._upsertWorker(sid, normalizeWorker(event.worker), change);
        break;
      }
      case 'worker-deleted': {
        const s = this._sessions.get(sid);
        const wid = event.worker_id || event.worker?.id;
        if (!s || !wid) {
          change.needsRefresh = !s && this._loaded;
          break;
        }
        const workers = s.workers.filter(w => w.id !== wid);
        if (workers.length !== s.workers.length) {
          this._sessions.set(sid, { ...s, workers });
          change.changed.add(sid);
        }
        break;
      }
      case 'activity-changed': {
        const wid = event.worker_id || event.worker?.id;
        const current = wid ? this.worker(sid, wid) : undefined;
        let next: IWorker | undefined;
        if (event.worker) {
          next = normalizeWorker(event.worker);
        } else if (current) {
          next = { ...current };
        }
        if (!next) {
          change.needsRefresh = true;
          break;
        }
        if (event.activity) {
          next.activity = event.activity as Activity;
        }
        this._upsertWorker(sid, next, change);
        break;
      }
      default:
        // Events this version does not know are ignored: newer servers may add some.
        break;
    }
    return change;
  }

  /** Apply several events, merging what they changed. */
  applyAll(events: IMasEvent[]): IChange {
    const change = emptyChange();
    for (const e of events) {
      merge(change, this.apply(e));
    }
    return change;
  }

  /** The sessions grouped by task: tasks in name order, sessions without one last. */
  groups(options: { showStopped?: boolean } = {}): IGroup[] {
    const showStopped = options.showStopped ?? true;
    const byTask = new Map<string | null, ISession[]>();
    for (const s of this._sessions.values()) {
      if (!showStopped && s.status === 'stopped') {
        continue;
      }
      const key = s.task || null;
      let list = byTask.get(key);
      if (!list) {
        list = [];
        byTask.set(key, list);
      }
      list.push(s);
    }
    const tasks = Array.from(byTask.keys()).sort((a, b) => {
      if (a === null) {
        return 1;
      }
      if (b === null) {
        return -1;
      }
      return a.localeCompare(b);
    });
    return tasks.map(task => ({
      task,
      sessions: byTask.get(task)!.sort(compareSessions)
    }));
  }

  /** Workers that are asking the user something right now. */
  waiting(): IAttention[] {
    const out: IAttention[] = [];
    for (const s of this._sessions.values()) {
      for (const w of s.workers) {
        if (isWaiting(w)) {
          out.push({ session: s, worker: w });
        }
      }
    }
    return out;
  }

  private _upsertSession(s: ISession, change: IChange): void {
    const old = this._sessions.get(s.id);
    // A snapshot of the session may be older than an event already applied to it.
    if (old && old.updated_at && s.updated_at && s.updated_at < old.updated_at) {
      return;
    }
    this._sessions.set(s.id, s);
    change.changed.add(s.id);
    if (
      !old ||
      old.task !== s.task ||
      old.status !== s.status ||
      old.created_at !== s.created_at ||
      old.name !== s.name
    ) {
      change.structural = true;
    }
    this._collectAttention(old, s, change);
  }

  private _upsertWorker(sid: string, w: IWorker, change: IChange): void {
    const s = this._sessions.get(sid);
    if (!s) {
      // The session is not known yet (an event raced the snapshot): fetch again.
      change.needsRefresh = true;
      return;
    }
    const old = s.workers.find(x => x.id === w.id);
    const workers = old ? s.workers.map(x => (x.id === w.id ? w : x)) : [...s.workers, w];
    this._sessions.set(sid, { ...s, workers });
    change.changed.add(sid);
    if (!isWaiting(old) && isWaiting(w)) {
      change.attention.push({ session: this._sessions.get(sid)!, worker: w });
    }
  }

  private _collectAttention(old: ISession | undefined, s: ISession, change: IChange): void {
    for (const w of s.workers) {
      const before = old?.workers.find(x => x.id === w.id);
      if (isWaiting(w) && !isWaiting(before)) {
        change.attention.push({ session: s, worker: w });
      }
    }
  }
}
