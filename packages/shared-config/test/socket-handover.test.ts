// The hold of a handed-over socket, on real sockets: connections and datagrams that arrive before the
// server exists are kept and delivered on release, and an error of the socket while it is held is
// reported instead of ending the process. The socket errors are emitted by the test: an accept
// failing with EMFILE or a receive error cannot be provoked reliably from outside.
import dgram from 'node:dgram';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { holdConnections, holdDatagrams } from '../src/index';

describe('socket hand-over hold', () => {
  it('keeps an early connection for the server and reports a listening socket error while held', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const errors: string[] = [];
    const held = holdConnections(server, { onError: (err) => errors.push(err.message) });
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    await expect.poll(() => held.count).toBe(1);
    // without the hold's listener this emit would throw (an unhandled 'error' event)
    expect(() => server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }))).not.toThrow();
    expect(errors).toEqual(['accept EMFILE']);
    const delivered: net.Socket[] = [];
    held.release((socket) => delivered.push(socket));
    expect(delivered).toHaveLength(1);
    // after release the server's own 'error' listener is in charge again
    expect(server.listenerCount('error')).toBe(0);
    delivered[0].destroy();
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('keeps an early datagram and reports a UDP socket error while held', async () => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const errors: string[] = [];
    const held = holdDatagrams(socket, { onError: (err) => errors.push(err.message) });
    const sender = dgram.createSocket('udp4');
    sender.send(Buffer.from('early'), socket.address().port, '127.0.0.1');
    await expect.poll(() => held.count).toBe(1);
    expect(() => socket.emit('error', new Error('recvmsg ENOMEM'))).not.toThrow();
    expect(errors).toEqual(['recvmsg ENOMEM']);
    const delivered: string[] = [];
    held.release((d) => delivered.push(d.msg.toString()));
    expect(delivered).toEqual(['early']);
    expect(socket.listenerCount('error')).toBe(0);
    sender.close();
    socket.close();
  });
});
