import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChannelClient, ChannelState, parseChannelMessage, sizeMessage, stdinMessage } from '../src/channel';
import { FakeSocket, FakeTimers } from './fakes';

function setup() {
  const sockets: FakeSocket[] = [];
  const timers = new FakeTimers();
  const screen: string[] = [];
  const states: ChannelState[] = [];
  const activity: string[] = [];
  const exits: (number | null)[] = [];
  const reasons: (string | null)[] = [];
  const ch = new ChannelClient({
    open: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    sink: {
      reset: () => screen.splice(0, screen.length),
      write: d => screen.push(d)
    },
    onState: s => states.push(s),
    onActivity: a => activity.push(a),
    onExit: (c, r) => {
      exits.push(c);
      reasons.push(r);
    },
    minDelay: 100,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout
  });
  return { ch, sockets, timers, screen, states, activity, exits, reasons };
}

test('messages are decoded, malformed ones are unknown', () => {
  assert.deepEqual(parseChannelMessage('["setup", {}]'), { kind: 'setup' });
  assert.deepEqual(parseChannelMessage('["stdout", "hi"]'), { kind: 'stdout', data: 'hi' });
  assert.deepEqual(parseChannelMessage('["activity", "busy"]'), { kind: 'activity', state: 'busy' });
  assert.deepEqual(parseChannelMessage('["exit", 2]'), { kind: 'exit', code: 2, reason: null });
  assert.deepEqual(parseChannelMessage('["exit", null]'), { kind: 'exit', code: null, reason: null });
  assert.deepEqual(parseChannelMessage('["exit", -1, "restarted"]'), { kind: 'exit', code: -1, reason: 'restarted' });
  assert.deepEqual(parseChannelMessage('["exit", 1, 5]'), { kind: 'exit', code: 1, reason: null });
  assert.deepEqual(parseChannelMessage('["disconnect", 1]'), { kind: 'disconnect', code: 1 });
  assert.deepEqual(parseChannelMessage('not json'), { kind: 'unknown' });
  assert.deepEqual(parseChannelMessage('{"a": 1}'), { kind: 'unknown' });
  assert.deepEqual(parseChannelMessage('["other"]'), { kind: 'unknown' });
  assert.equal(stdinMessage('a"b'), '["stdin","a\\"b"]');
  assert.equal(sizeMessage(24, 80), '["set_size",24,80]');
});

test('history is replayed, typing and resize are sent', () => {
  const t = setup();
  t.ch.resize(30, 100);
  t.ch.connect();
  assert.equal(t.ch.sendInput('x'), false, 'nothing is sent before the socket opens');
  t.sockets[0].open();
  assert.deepEqual(t.sockets[0].sent, ['["set_size",30,100]'], 'the size goes first');
  t.sockets[0].receive(['setup', {}]);
  t.sockets[0].receive(['stdout', 'demo> ']);
  assert.deepEqual(t.screen, ['demo> ']);
  assert.equal(t.ch.sendInput('hello\r'), true);
  t.ch.resize(30, 100); // same size: not sent again
  t.ch.resize(40, 120);
  assert.deepEqual(t.sockets[0].sent.slice(1), ['["stdin","hello\\r"]', '["set_size",40,120]']);
  t.sockets[0].receive(['activity', 'busy']);
  assert.deepEqual(t.activity, ['busy']);
});

test('a reconnect rebuilds the screen instead of doubling it', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.sockets[0].receive(['setup', {}]);
  t.sockets[0].receive(['stdout', 'line 1\r\n']);
  t.sockets[0].drop();
  assert.equal(t.ch.state, 'reconnecting');
  t.timers.advance(100);
  t.sockets[1].open();
  assert.equal(t.ch.state, 'open');
  t.sockets[1].receive(['setup', {}]);
  t.sockets[1].receive(['stdout', 'line 1\r\n']);
  t.sockets[1].receive(['stdout', 'line 2\r\n']);
  assert.deepEqual(t.screen, ['line 1\r\n', 'line 2\r\n']);
  assert.deepEqual(t.states, ['open', 'reconnecting', 'open']);
});

test('exit ends reconnecting until connect is called again', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.sockets[0].receive(['exit', 7]);
  assert.equal(t.ch.state, 'exited');
  assert.equal(t.ch.exitCode, 7);
  assert.equal(t.ch.exitReason, null, 'a server that does not say why');
  assert.deepEqual(t.exits, [7]);
  t.sockets[0].drop();
  t.timers.advance(100000);
  assert.equal(t.sockets.length, 1, 'no reconnect after exit');
  assert.equal(t.ch.sendInput('x'), false);
  // The user pressed Restart.
  t.ch.connect();
  assert.equal(t.ch.state, 'connecting');
  t.sockets[1].open();
  assert.equal(t.ch.state, 'open');
  assert.equal(t.ch.exitCode, null);
});

test('exit tells why the worker ended, until connect is called again', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.sockets[0].receive(['exit', -1, 'restarted']);
  assert.equal(t.ch.state, 'exited');
  assert.equal(t.ch.exitReason, 'restarted');
  assert.deepEqual(t.reasons, ['restarted']);
  t.ch.connect();
  assert.equal(t.ch.exitReason, null);
  t.sockets[1].open();
  t.sockets[1].receive(['disconnect', 1]);
  assert.equal(t.ch.exitReason, null, 'a delete has no exit reason');
  assert.deepEqual(t.reasons, ['restarted', null]);
});

test('disconnect is treated like exit', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.sockets[0].receive(['disconnect', 1]);
  assert.equal(t.ch.state, 'exited');
});

test('dispose stops everything', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.ch.dispose();
  assert.equal(t.ch.state, 'stopped');
  assert.equal(t.sockets[0].closed, true);
  t.timers.advance(100000);
  assert.equal(t.sockets.length, 1);
});

test('a server with no history left keeps the screen the user saw', () => {
  const t = setup();
  t.ch.connect();
  t.sockets[0].open();
  t.sockets[0].receive(['setup', {}]);
  t.sockets[0].receive(['stdout', 'what was there']);
  t.sockets[0].drop();
  t.timers.advance(100);
  t.sockets[1].open();
  t.sockets[1].receive(['setup', {}]);
  t.sockets[1].receive(['exit', -1]);
  assert.deepEqual(t.screen, ['what was there']);
  assert.equal(t.ch.state, 'exited');
});
