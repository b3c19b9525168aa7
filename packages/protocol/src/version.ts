/** The version of every Flotilla role built from this tree. */
export const VERSION = "0.1.0";
