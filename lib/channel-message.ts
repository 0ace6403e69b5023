// diagnostics_channel messages that survive JSON.

/**
 * A `diagnostics_channel` message: `data` as plain, JSON-safe fields, and `refs` (the detector, the
 * error object) as non-enumerable properties. Subscribers read `message.detector` as before, while
 * `JSON.stringify(message)`, spreading and deep equality see the data alone, so that
 * `JSON.parse(JSON.stringify(message))` deep-equals the message.
 */
export function channelMessage<D extends object, R extends object>(data: D, refs: R): D & Readonly<R> {
  const message = { ...data };
  for (const [key, value] of Object.entries(refs)) {
    Object.defineProperty(message, key, { value, enumerable: false, configurable: true });
  }
  return message as D & Readonly<R>;
}
