/** RFC 9110 7.6.1: connection-specific fields never forwarded (plus the ones named in Connection); HTTP2-Settings belongs to an h2c upgrade, which is not taken. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'http2-settings']);

export function isHopByHop(lowerName: string, connectionTokens: string[] | undefined): boolean {
  return HOP_BY_HOP.has(lowerName) || (connectionTokens !== undefined && connectionTokens.includes(lowerName));
}

const REASONS: Record<number, string> = {
  200: 'OK', 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout',
  413: 'Payload Too Large', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? 'Unknown';
}
