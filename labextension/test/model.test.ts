import assert from 'node:assert/strict';
import { test } from 'node:test';

import { exitText, IMasEvent, ISession, IWorker, SessionsModel } from '../src/model';

function worker(id: string, extra: Partial<IWorker> = {}): IWorker {
  return {
    id,
    session_id: 's1',
    name: `w-${id}`,
    kind: 'agent',
    backend: 'demo',
    persona: null,
    runtime: 'pty',
    status: 'running',
    exit_code: null,
    activity: 'idle',
    created_at: '2026-01-01T00:00:00.000+00:00',
    updated_at: '2026-01-01T00:00:00.000+00:00',
    ...extra
  };
}

function session(id: string, extra: Partial<ISession> = {}): ISession {
  return {
    id,
    name: `name-${id}`,
    kind: 'quick',
    status: 'active',
    task: null,
    workspace: `/tmp/${id}`,
    created_at: '2026-01-01T00:00:00.000+00:00',
    updated_at: '2026-01-01T00:00:00.000+00:00',
    workers: [],
    ...extra
  };
}

test('reset loads a snapshot and marks every row changed', () => {
  const m = new SessionsModel();
  assert.equal(m.loaded, false);
  const change = m.reset([session('a'), session('b')]);
  assert.equal(m.loaded, true);
  assert.equal(m.size, 2);
  assert.deepEqual([...change.changed].sort(), ['a', 'b']);
  assert.equal(change.structural, true);
  assert.deepEqual(change.attention, []);
});

test('a refresh marks only the rows that differ, and the removed ones', () => {
  const m = new SessionsModel();
  m.reset([session('a'), session('b'), session('c')]);
  const change = m.reset([session('a'), session('b', { name: 'renamed' })]);
  assert.deepEqual([...change.changed].sort(), ['b', 'c']);
  assert.equal(m.size, 2);
});

test('sessions are found by id or by name', () => {
  const m = new SessionsModel();
  m.reset([session('a', { workers: [worker('w1')] })]);
  assert.equal(m.get('a')?.id, 'a');
  assert.equal(m.get('name-a')?.id, 'a');
  assert.equal(m.worker('name-a', 'w-w1')?.id, 'w1');
  assert.equal(m.get('zzz'), undefined);
});

test('session-created adds a session, session-deleted removes it', () => {
  const m = new SessionsModel();
  m.reset([]);
  let c = m.apply({ type: 'session-created', session_id: 'a', session: session('a') });
  assert.equal(m.size, 1);
  assert.equal(c.structural, true);
  c = m.apply({ type: 'session-deleted', session_id: 'a' });
  assert.equal(m.size, 0);
  assert.equal(c.structural, true);
  assert.ok(c.changed.has('a'));
});

test('a session update that changes nothing structural redraws only that row', () => {
  const m = new SessionsModel();
  m.reset([session('a'), session('b')]);
  const c = m.apply({
    type: 'session-updated',
    session_id: 'a',
    session: session('a', { updated_at: '2026-01-01T00:00:01.000+00:00', active_seconds: 5 })
  });
  assert.deepEqual([...c.changed], ['a']);
  assert.equal(c.structural, false);
});

test('a session update older than what is known is ignored', () => {
  const m = new SessionsModel();
  m.reset([session('a', { name: 'new', updated_at: '2026-01-01T00:00:05.000+00:00' })]);
  const c = m.apply({
    type: 'session-updated',
    session_id: 'a',
    session: session('a', { name: 'old', updated_at: '2026-01-01T00:00:01.000+00:00' })
  });
  assert.equal(m.get('a')?.name, 'new');
  assert.equal(c.changed.size, 0);
});

test('a task change moves the session to another group', () => {
  const m = new SessionsModel();
  m.reset([session('a', { task: 'T-1' }), session('b', { task: 'T-1' }), session('c')]);
  assert.deepEqual(
    m.groups().map(g => [g.task, g.sessions.length]),
    [['T-1', 2], [null, 1]]
  );
  const c = m.apply({
    type: 'session-updated',
    session_id: 'b',
    session: session('b', { task: 'A-9', updated_at: '2026-01-02T00:00:00.000+00:00' })
  });
  assert.equal(c.structural, true);
  assert.deepEqual(
    m.groups().map(g => [g.task, g.sessions.map(s => s.id)]),
    [['A-9', ['b']], ['T-1', ['a']], [null, ['c']]]
  );
});

test('groups order sessions active first, then newest first', () => {
  const m = new SessionsModel();
  m.reset([
    session('old', { created_at: '2026-01-01T00:00:00.000+00:00' }),
    session('new', { created_at: '2026-01-03T00:00:00.000+00:00' }),
    session('paused', { status: 'paused', created_at: '2026-01-04T00:00:00.000+00:00' }),
    session('stopped', { status: 'stopped', created_at: '2026-01-05T00:00:00.000+00:00' })
  ]);
  assert.deepEqual(
    m.groups()[0].sessions.map(s => s.id),
    ['new', 'old', 'paused', 'stopped']
  );
  assert.deepEqual(
    m.groups({ showStopped: false })[0].sessions.map(s => s.id),
    ['new', 'old', 'paused']
  );
});

test('worker events add, update and remove workers', () => {
  const m = new SessionsModel();
  m.reset([session('s1')]);
  m.apply({ type: 'worker-created', session_id: 's1', worker_id: 'w1', worker: worker('w1', { status: 'starting' }) });
  assert.equal(m.get('s1')?.workers.length, 1);
  m.apply({
    type: 'worker-exited',
    session_id: 's1',
    worker_id: 'w1',
    worker: worker('w1', { status: 'exited', exit_code: 3 })
  });
  assert.equal(m.worker('s1', 'w1')?.status, 'exited');
  assert.equal(m.worker('s1', 'w1')?.exit_code, 3);
  const c = m.apply({ type: 'worker-deleted', session_id: 's1', worker_id: 'w1' });
  assert.equal(m.get('s1')?.workers.length, 0);
  assert.ok(c.changed.has('s1'));
});

test('activity-changed updates the activity, with or without a worker record', () => {
  const m = new SessionsModel();
  m.reset([session('s1', { workers: [worker('w1')] })]);
  m.apply({ type: 'activity-changed', session_id: 's1', worker_id: 'w1', activity: 'busy' });
  assert.equal(m.worker('s1', 'w1')?.activity, 'busy');
  m.apply({
    type: 'activity-changed',
    session_id: 's1',
    worker_id: 'w1',
    worker: worker('w1', { activity: 'idle' }),
    activity: 'idle'
  });
  assert.equal(m.worker('s1', 'w1')?.activity, 'idle');
});

test('a worker that starts waiting asks for attention once', () => {
  const m = new SessionsModel();
  m.reset([session('s1', { workers: [worker('w1')] })]);
  const ev: IMasEvent = { type: 'activity-changed', session_id: 's1', worker_id: 'w1', activity: 'waiting' };
  const first = m.apply(ev);
  assert.equal(first.attention.length, 1);
  assert.equal(first.attention[0].worker.id, 'w1');
  assert.equal(first.attention[0].session.id, 's1');
  assert.equal(m.apply(ev).attention.length, 0, 'still waiting is not news');
  assert.equal(m.waiting().length, 1);
  m.apply({ type: 'activity-changed', session_id: 's1', worker_id: 'w1', activity: 'busy' });
  assert.equal(m.waiting().length, 0);
});

test('an exited worker does not count as waiting', () => {
  const m = new SessionsModel();
  m.reset([session('s1', { workers: [worker('w1', { activity: 'waiting', status: 'exited' })] })]);
  assert.equal(m.waiting().length, 0);
});

test('the first snapshot does not notify, a later one does for new waiting workers', () => {
  const m = new SessionsModel();
  const first = m.reset([session('s1', { workers: [worker('w1', { activity: 'waiting' })] })]);
  assert.equal(first.attention.length, 0);
  const again = m.reset([
    session('s1', { workers: [worker('w1', { activity: 'waiting' }), worker('w2', { activity: 'waiting' })] })
  ]);
  assert.deepEqual(again.attention.map(a => a.worker.id), ['w2']);
});

test('events about an unknown session ask for a refresh', () => {
  const m = new SessionsModel();
  m.reset([]);
  const c = m.apply({ type: 'worker-created', session_id: 'nope', worker_id: 'w1', worker: worker('w1') });
  assert.equal(c.needsRefresh, true);
  const d = m.apply({ type: 'activity-changed', session_id: 'nope', worker_id: 'w1', activity: 'busy' });
  assert.equal(d.needsRefresh, true);
});

test('unknown event types are ignored', () => {
  const m = new SessionsModel();
  m.reset([session('a')]);
  const c = m.apply({ type: 'something-new', session_id: 'a' });
  assert.equal(c.changed.size, 0);
  assert.equal(c.needsRefresh, false);
});

test('applyAll merges changes', () => {
  const m = new SessionsModel();
  m.reset([session('s1', { workers: [worker('w1')] }), session('s2')]);
  const c = m.applyAll([
    { type: 'activity-changed', session_id: 's1', worker_id: 'w1', activity: 'waiting' },
    { type: 'session-deleted', session_id: 's2' }
  ]);
  assert.deepEqual([...c.changed].sort(), ['s1', 's2']);
  assert.equal(c.structural, true);
  assert.equal(c.attention.length, 1);
});

test('missing fields get safe defaults', () => {
  const m = new SessionsModel();
  const raw = session('a', { task: '' as any, workers: [{ ...worker('w1'), activity: undefined as any }] });
  m.reset([raw]);
  assert.equal(m.get('a')?.task, null);
  assert.equal(m.worker('a', 'w1')?.activity, 'unknown');
});

test('200 sessions: applying an event stays cheap', () => {
  const m = new SessionsModel();
  const list = Array.from({ length: 200 }, (_, i) =>
    session(`s${i}`, { task: `T-${i % 10}`, workers: [worker(`w${i}`, { session_id: `s${i}` })] })
  );
  m.reset(list);
  const start = performance.now();
  for (let i = 0; i < 1000; i++) {
    m.apply({ type: 'activity-changed', session_id: `s${i % 200}`, worker_id: `w${i % 200}`, activity: i % 2 ? 'busy' : 'idle' });
  }
  const perEvent = (performance.now() - start) / 1000;
  assert.ok(perEvent < 5, `${perEvent} ms per event`);
});

test('exitText says in words why a process was ended for its worker', () => {
  const ended = (extra: Partial<IWorker>) => exitText(worker('w', { status: 'exited', ...extra }));
  // A pause, a stop or a restart ends the process with SIGHUP: not a crash with signal 1.
  assert.equal(ended({ exit_code: -1, exit_signal: 1, exit_reason: 'paused' }), 'paused');
  assert.equal(ended({ exit_code: -1, exit_signal: 1, exit_reason: 'stopped' }), 'stopped');
  assert.equal(ended({ exit_code: -1, exit_signal: 1, exit_reason: 'restarted' }), 'restarting');
  assert.equal(ended({ exit_code: null, exit_reason: 'server stopped' }), 'ended with the server');
  assert.equal(ended({ exit_code: null, exit_reason: 'interrupted' }), 'ended with the server');
  // Its own end keeps its code or signal.
  assert.equal(ended({ exit_code: 3, exit_reason: 'crashed' }), 'exited (3)');
  assert.equal(ended({ exit_code: -9, exit_signal: 9, exit_reason: 'crashed' }), 'exited (signal 9)');
  assert.equal(ended({ exit_code: 0, exit_reason: 'exited' }), 'exited (0)');
  assert.equal(ended({ exit_code: null, exit_reason: null }), 'exited');
});
